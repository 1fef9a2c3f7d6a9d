# $1 = 0 on removal (stop and disable), 1 on upgrade (keep running).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl disable --now sputnik.service >/dev/null 2>&1 || true
fi
exit 0
