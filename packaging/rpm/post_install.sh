# $1 = 1 on install, 2 on upgrade.
install -d -o sputnik -g sputnik -m 0750 /var/lib/sputnik
chown root:sputnik /etc/sputnik /etc/sputnik/sputnik.toml
chmod 0750 /etc/sputnik
chmod 0640 /etc/sputnik/sputnik.toml
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
