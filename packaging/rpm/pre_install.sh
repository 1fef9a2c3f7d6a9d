# Creates the sputnik system user before the files (owned by its group) are installed.
getent group sputnik >/dev/null || groupadd --system sputnik
getent passwd sputnik >/dev/null || useradd --system --gid sputnik --home-dir /var/lib/sputnik \
    --no-create-home --shell /sbin/nologin --comment "Sputnik employee companion" sputnik
exit 0
