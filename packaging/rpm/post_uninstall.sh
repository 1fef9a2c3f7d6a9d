# $1 = 0 on removal, 1 on upgrade. The data in /var/lib/sputnik is never deleted by rpm: remove
# it by hand (and `userdel sputnik`) once it is no longer needed.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
    if [ "$1" -ge 1 ]; then
        systemctl try-restart sputnik.service >/dev/null 2>&1 || true
    fi
fi
exit 0
