#!/usr/bin/env bash
# Stop what tests/infra/up.sh started, and only that.
#
#   bash tests/infra/down.sh [STATE_DIR] [--purge]    (default /tmp/fibtui-infra)
#
# Cancels every Slurm job first (so slurmd can clean up its job processes), then
# sends SIGTERM to exactly the PIDs recorded in STATE_DIR/pids, newest first, each
# only if /proc/<pid>/comm still names the daemon we started (a reused PID is left
# alone); a zombie counts as stopped. Never kills by name. --purge also removes the
# state dir and the throwaway user. Exit 1 if a recorded daemon survives.
set -uo pipefail
STATE=/tmp/fibtui-infra PURGE=
for a in "$@"; do
    case "$a" in --purge) PURGE=1 ;; *) STATE=$a ;; esac
done
[ -n "${FIBTUI_INFRA_STATE:-}" ] && [ $# -eq 0 ] && STATE=$FIBTUI_INFRA_STATE
PIDS=$STATE/pids
if [ -d "$STATE" ] && [ -z "${FIBTUI_INFRA_LOCKED:-}" ]; then
    exec 9>"$STATE/.lock"
    flock -w 300 9 || { echo "[down] another up.sh/down.sh holds $STATE/.lock" >&2; exit 1; }
fi

alive() {  # alive NAME PID
    [ -r "/proc/$2/comm" ] && [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ] &&
        [ "$(awk '{print $3}' "/proc/$2/stat" 2>/dev/null)" != Z ]
}

if [ ! -s "$PIDS" ]; then
    echo "[down] nothing recorded in $PIDS"
else
    # cancel jobs while slurmctld and slurmd are still up
    ctld=$(awk '$1 == "slurmctld" {print $2}' "$PIDS")
    if [ -n "$ctld" ] && alive slurmctld "$ctld" && [ -f "$STATE/slurm.conf" ]; then
        export SLURM_CONF=$STATE/slurm.conf
        if [ -n "$(timeout 10 squeue -h -o %i 2>/dev/null)" ]; then
            timeout 10 scancel --full --quiet --state=PENDING 2>/dev/null
            timeout 10 scancel --full --quiet 2>/dev/null
            for ((i = 0; i < 150; i++)); do   # up to 15 s: KillWait=5 plus margin
                [ -z "$(timeout 10 squeue -h -t PD,R,CG,CF,S,SI,SO -o %i 2>/dev/null)" ] && break
                sleep 0.1
            done
            echo "[down] jobs cancelled"
        fi
    fi
    failed=
    # newest first
    tac "$PIDS" | while read -r name pid; do
        [ -n "$pid" ] || continue
        if ! alive "$name" "$pid"; then
            echo "[down] $name $pid already gone"
            continue
        fi
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 100; i++)); do   # 10 s
            alive "$name" "$pid" || break
            sleep 0.1
        done
        if alive "$name" "$pid"; then
            echo "[down] $name $pid did not stop after SIGTERM (10 s)" >&2
            echo "$name $pid" >> "$STATE/pids.survivors"
        else
            echo "[down] stopped $name $pid"
        fi
    done
    if [ -s "$STATE/pids.survivors" ]; then
        rm -f "$STATE/pids.survivors"
        exit 1
    fi
    : > "$PIDS"
fi
if [ -n "$PURGE" ]; then
    user=${FIBTUI_CI_USER:-fibtui-ci}
    if id "$user" >/dev/null 2>&1 && [ -z "$(ps -o pid= -u "$user")" ]; then userdel -r "$user" 2>/dev/null; fi
    case "$STATE" in /|/tmp|/root|/home|"") echo "[down] refusing to remove $STATE" >&2; exit 1 ;; esac
    [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$STATE/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
    rm -rf "$STATE"
    echo "[down] purged $STATE and user $user"
fi
exit 0
