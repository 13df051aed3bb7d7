#!/usr/bin/env bash
# Real Slurm + OpenSSH on loopback for fibtui's integration tests.
#
#   bash tests/infra/up.sh [STATE_DIR]        (default /tmp/fibtui-infra; needs root)
#
# Installs only the missing Debian packages (slurmctld slurmd slurm-client munge
# openssh-server openssh-client), writes every config file under STATE_DIR, starts
# munged -> slurmctld -> slurmd -N localhost and an sshd on 127.0.0.1:2222 for a
# throwaway user, records every daemon's PID in STATE_DIR/pids (start order), and
# writes STATE_DIR/env.sh for the tests:  . STATE_DIR/env.sh && pytest -m "slurm or ssh"
# A second run reuses healthy daemons (same config) or restarts them cleanly.
# Stop with: bash tests/infra/down.sh [STATE_DIR]
#
# Exit codes: 0 up; 3 unavailable here (not root, no apt-get, packages cannot be
# installed): the last stderr line is "fibtui-infra unavailable: <reason>" and
# the reason is also written to STATE_DIR/unavailable; 1 anything else (a real failure).
# Facts behind the choices: ../shared/infra-recipe.md (Slurm 22.05 on Debian 12).
set -euo pipefail
umask 022

STATE=${1:-${FIBTUI_INFRA_STATE:-/tmp/fibtui-infra}}
CI_USER=${FIBTUI_CI_USER:-fibtui-ci}
SSH_PORT=${FIBTUI_SSH_PORT:-2222}
SSH_ALIAS=fibtui-test
GRACE_S=${FIBTUI_SLURM_GRACE:-10}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PKGS=(slurmctld slurmd slurm-client munge openssh-server openssh-client chromium)  # chromium: the report's browser test
T0=${EPOCHREALTIME/[.,]/}

log() { local t=${EPOCHREALTIME/[.,]/}; printf '[up %4d ms] %s\n' $(((t - T0) / 1000)) "$*"; }
die() { echo "fibtui-infra failed: $*" >&2; exit 1; }
unavailable() {
    mkdir -p "$STATE" 2>/dev/null && echo "$*" > "$STATE/unavailable" 2>/dev/null || true
    echo "fibtui-infra unavailable: $*" >&2
    exit 3
}

case "$STATE" in /*) ;; *) STATE=$(pwd)/$STATE ;; esac
[ "$(id -u)" = 0 ] || unavailable "needs root (installs packages, starts munged/slurmctld/slurmd/sshd), running as $(id -un)"
[ -r /proc/1/comm ] || unavailable "no /proc"
mkdir -p "$STATE"
rm -f "$STATE/unavailable"
exec 9>"$STATE/.lock"   # one up.sh/down.sh at a time per state dir (daemons get 9>&-)
flock -w 300 9 || die "another tests/infra/up.sh or down.sh holds $STATE/.lock"

# ---------------------------------------------------------------- packages
missing=()
for p in "${PKGS[@]}"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || unavailable "packages missing (${missing[*]}) and no apt-get to install them"
    log "installing ${missing[*]}"
    policy=/usr/sbin/policy-rc.d own_policy=
    if [ ! -e $policy ]; then  # postinst scripts must not start services
        printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy && own_policy=1
    fi
    ok=1
    { apt-get update -qq -o DPkg::Lock::Timeout=120 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=120 --no-install-recommends \
        "${missing[@]}"; } > "$STATE/apt.log" 2>&1 || ok=
    [ -n "$own_policy" ] && rm -f $policy
    [ -n "$ok" ] || unavailable "apt-get could not install ${missing[*]}: $(grep -E '^(E|W):' "$STATE/apt.log" | tail -1)"
fi
for b in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/sshd /usr/bin/sbatch /usr/bin/ssh-keygen; do
    [ -x $b ] || unavailable "$b missing after install"
done

# ---------------------------------------------------------------- config (before ANY Slurm command)
mkdir -p "$STATE"/{log,ctld,slurmd,gpu,ssh,work}
chmod 755 "$STATE" "$STATE/log"
chmod 1777 "$STATE/work"
NCPU=$(nproc)
MEM_MB=$(awk '/MemTotal/ {printf "%d", $2 * 0.8 / 1024}' /proc/meminfo)
for i in 0 1; do [ -c "$STATE/gpu/nvidia$i" ] || mknod -m 666 "$STATE/gpu/nvidia$i" c 1 3; done

new=$(mktemp -d "$STATE/.cfg.XXXXXX")
cat > "$new/slurm.conf" <<CONF
# written by tests/infra/up.sh: a one-node loopback cluster for fibtui's tests
ClusterName=ci
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
KillWait=5
JobRequeue=1
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/log/jobcomp.txt
GresTypes=gpu
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM_MB Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=$GRACE_S
PartitionName=high  Nodes=localhost Default=NO  MaxTime=INFINITE State=UP PriorityTier=10
CONF
cat > "$new/gres.conf" <<CONF
AutoDetect=off
NodeName=localhost Name=gpu File=$STATE/gpu/nvidia[0-1]
CONF
cat > "$new/sshd_config" <<CONF
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $STATE/ssh/ssh_host_ed25519_key
PidFile $STATE/sshd.pid
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $CI_USER
UsePAM no
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
CONF
cat > "$new/ssh_config" <<CONF
Host $SSH_ALIAS
    HostName 127.0.0.1
    Port $SSH_PORT
    User $CI_USER
    IdentityFile $STATE/ssh/client_ed25519_key
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/ssh/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
CONF
changed=
for f in slurm.conf gres.conf sshd_config ssh_config; do
    cmp -s "$new/$f" "$STATE/$f" || changed="$changed $f"
done

# ---------------------------------------------------------------- second run: reuse or restart
alive() {  # alive NAME PID: the recorded process still runs as NAME (not a zombie, not a reused PID)
    [ -r "/proc/$2/comm" ] && [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ] &&
        [ "$(awk '{print $3}' "/proc/$2/stat" 2>/dev/null)" != Z ]
}
reuse=
if [ -s "$STATE/pids" ]; then
    reuse=1
    [ -z "$changed" ] || reuse=
    n=0
    while read -r name pid; do
        n=$((n + 1)); alive "$name" "$pid" || reuse=
    done < "$STATE/pids"
    [ "$n" = 4 ] || reuse=
    if [ -n "$reuse" ] && SLURM_CONF=$STATE/slurm.conf timeout 10 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        log "daemons already up (same config): reusing them"
    else
        log "restarting: recorded daemons are not all healthy or the config changed (${changed:-none})"
        reuse=
        FIBTUI_INFRA_LOCKED=1 bash "$HERE/down.sh" "$STATE" || true
    fi
fi
for f in slurm.conf gres.conf sshd_config ssh_config; do mv -f "$new/$f" "$STATE/$f"; done
rmdir "$new"
chmod 644 "$STATE/slurm.conf" "$STATE/gres.conf" "$STATE/ssh_config"
export SLURM_CONF=$STATE/slurm.conf
# Safety net: a Slurm command run without SLURM_CONF and without /etc/slurm/slurm.conf
# falls back to a DNS SRV lookup (traffic off loopback). Point the default path at
# this cluster, but only if nothing is there (or it is already our link).
if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
    case "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" in
        ""|*/slurm.conf) mkdir -p /etc/slurm && ln -sfn "$STATE/slurm.conf" /etc/slurm/slurm.conf ;;
    esac
fi

record() { echo "$1 $2" >> "$STATE/pids"; }
wait_pidfile() {  # wait_pidfile FILE NAME SECONDS -> prints the pid
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        if [ -s "$1" ]; then
            local pid; pid=$(tr -dc 0-9 < "$1")
            if [ -n "$pid" ] && alive "$2" "$pid"; then echo "$pid"; return 0; fi
        fi
        sleep 0.1
    done
    return 1
}
port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q . ; }

if [ -z "$reuse" ]; then
    : > "$STATE/pids"
    for p in 6817 6818 "$SSH_PORT"; do
        if command -v ss >/dev/null && port_busy "$p"; then die "port $p is already in use by a process this script did not start (see: ss -ltnp 'sport = :$p')"; fi
    done

    # ------------------------------------------------------------ munge
    id munge >/dev/null 2>&1 || die "user munge missing (the munge package creates it)"
    install -d -o munge -g munge -m 755 "$STATE/munge"
    if [ ! -s "$STATE/munge/munge.key" ]; then
        dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$STATE/munge/munge.key"; chmod 400 "$STATE/munge/munge.key"
    rm -f "$STATE/munge/munged.pid" "$STATE/munge/munge.socket" "$STATE/munge/munge.socket.lock"
    runuser -u munge -- /usr/sbin/munged --key-file="$STATE/munge/munge.key" --socket="$STATE/munge/munge.socket" \
        --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge/munged.log" \
        --seed-file="$STATE/munge/munged.seed" < /dev/null 9>&- >> "$STATE/log/munged.out" 2>&1 \
        || die "munged did not start: $(tail -2 "$STATE/log/munged.out" | tr '\n' ' ')"
    pid=$(wait_pidfile "$STATE/munge/munged.pid" munged 10) || die "munged did not write its pid file"
    record munged "$pid"
    log "munged $pid"

    # ------------------------------------------------------------ slurmctld, slurmd
    rm -f "$STATE/slurmctld.pid" "$STATE/slurmd.pid"
    /usr/sbin/slurmctld -f "$STATE/slurm.conf" < /dev/null 9>&- >> "$STATE/log/slurmctld.out" 2>&1 \
        || die "slurmctld did not start: $(tail -3 "$STATE/log/slurmctld.log" 2>/dev/null | tr '\n' ' ')"
    pid=$(wait_pidfile "$STATE/slurmctld.pid" slurmctld 20) || die "slurmctld did not stay up: $(tail -3 "$STATE/log/slurmctld.log" | tr '\n' ' ')"
    record slurmctld "$pid"
    log "slurmctld $pid"
    /usr/sbin/slurmd -f "$STATE/slurm.conf" -N localhost < /dev/null 9>&- >> "$STATE/log/slurmd.out" 2>&1 \
        || die "slurmd did not start: $(tail -3 "$STATE/log/slurmd.log" 2>/dev/null | tr '\n' ' ')"
    pid=$(wait_pidfile "$STATE/slurmd.pid" slurmd 20) || die "slurmd did not stay up: $(tail -3 "$STATE/log/slurmd.log" | tr '\n' ' ')"
    record slurmd "$pid"
    log "slurmd $pid"
fi

state=
for ((i = 0; i < 300; i++)); do
    state=$(timeout 10 sinfo -h -o %T 2>/dev/null | head -1 || true)
    case "$state" in idle|mixed|allocated) break ;; esac
    # a node left DOWN/DRAINED by an earlier run's state files: bring it back
    case "$state" in down*|drain*) scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true ;; esac
    sleep 0.1
done
case "$state" in idle|mixed|allocated) ;; *) die "node not idle after 30 s (sinfo says '${state:-nothing}'); see $STATE/log/slurmctld.log" ;; esac
log "sinfo: $state"

# ---------------------------------------------------------------- ssh: user, keys, sshd
if ! id "$CI_USER" >/dev/null 2>&1; then
    useradd -m -s /bin/bash "$CI_USER"
fi
usermod -p '*' "$CI_USER"   # locked accounts are refused by sshd with UsePAM no
HOME_CI=$(getent passwd "$CI_USER" | cut -d: -f6)
[ -f "$STATE/ssh/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C fibtui-test-host -f "$STATE/ssh/ssh_host_ed25519_key"
[ -f "$STATE/ssh/client_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C fibtui-test-client -f "$STATE/ssh/client_ed25519_key"
install -d -o "$CI_USER" -g "$CI_USER" -m 700 "$HOME_CI/.ssh"
install -o "$CI_USER" -g "$CI_USER" -m 600 "$STATE/ssh/client_ed25519_key.pub" "$HOME_CI/.ssh/authorized_keys"
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$STATE/ssh/ssh_host_ed25519_key.pub")" > "$STATE/ssh/known_hosts"
chmod 644 "$STATE/ssh/known_hosts"
install -d -m 755 /run/sshd
/usr/sbin/sshd -t -f "$STATE/sshd_config" || die "sshd -t rejected $STATE/sshd_config"

if [ -z "$reuse" ]; then
    rm -f "$STATE/sshd.pid"
    /usr/sbin/sshd -f "$STATE/sshd_config" -E "$STATE/log/sshd.log" < /dev/null 9>&- || die "sshd did not start: $(tail -2 "$STATE/log/sshd.log" | tr '\n' ' ')"
    pid=$(wait_pidfile "$STATE/sshd.pid" sshd 10) || die "sshd did not write its pid file"
    record sshd "$pid"
    log "sshd $pid"
fi
ok=
for ((i = 0; i < 50; i++)); do
    if ssh -F "$STATE/ssh_config" -o ConnectTimeout=5 "$SSH_ALIAS" true 2>"$STATE/log/ssh-check.err"; then ok=1; break; fi
    sleep 0.2
done
[ -n "$ok" ] || die "ssh $SSH_ALIAS does not answer: $(tail -1 "$STATE/log/ssh-check.err")"
log "ssh $SSH_ALIAS ok"

# ---------------------------------------------------------------- python for jobs run as $CI_USER
# Jobs started over SSH run as $CI_USER and need an interpreter that user can execute
# with fibtui and its dependencies importable. The tests' venv often cannot be used
# as is (its base interpreter lives under /root, mode 700): then build a shim venv
# from the system python of the same version whose .pth adds the venv's site-packages.
# The interpreter with fibtui installed: FIBTUI_PYTHON, else the active venv, else ./.venv, else python3.
has_fibtui() { (cd / && "$1" -c 'import remote.run') >/dev/null 2>&1; }
PY=
for c in "${FIBTUI_PYTHON:-}" "${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}" "$ROOT/.venv/bin/python" "$(command -v python3 || true)"; do
    if [ -n "$c" ] && [ -x "$c" ] && has_fibtui "$c"; then PY=$c; break; fi
done
[ -n "$PY" ] || die "no python with fibtui installed found (tried FIBTUI_PYTHON, \$VIRTUAL_ENV, $ROOT/.venv, python3); run make setup or set FIBTUI_PYTHON"
can_import() { (cd / && runuser -u "$CI_USER" -- "$1" -c 'import remote.run, remote.train, torch' ) >> "$STATE/log/python-check.log" 2>&1; }
stamp=$STATE/remote-python.ok
REMOTE_PY=
if [ -s "$stamp" ] && [ "$(head -1 "$stamp")" = "$PY" ] && [ -x "$(sed -n 2p "$stamp")" ]; then
    REMOTE_PY=$(sed -n 2p "$stamp")   # checked on an earlier run with the same interpreter
elif can_import "$PY"; then
    REMOTE_PY=$PY
else
    ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || die "cannot run $PY"
    sysconfig_paths=$("$PY" -c 'import sysconfig as s; p = s.get_paths(); print(p["purelib"]); print(p["platlib"])')
    base=/usr/bin/python$ver
    [ -x "$base" ] || die "$PY is not usable by $CI_USER and there is no $base to build a shim venv from (apt-get install python$ver, or set FIBTUI_PYTHON)"
    shim=$STATE/remote-venv
    if [ ! -x "$shim/bin/python" ]; then "$base" -m venv --without-pip "$shim" || die "$base -m venv failed"; fi
    pth=$("$shim/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/fibtui-shim.pth
    { echo "# written by tests/infra/up.sh: $PY's packages for $CI_USER"
      for d in $(printf '%s\n' "$sysconfig_paths" | sort -u); do printf 'import site; site.addsitedir(%s)\n' "'$d'"; done
    } > "$pth"
    chmod -R a+rX "$shim"
    can_import "$shim/bin/python" || die "$CI_USER cannot import fibtui with $shim/bin/python: $(tail -1 "$STATE/log/python-check.log")"
    REMOTE_PY=$shim/bin/python
fi
printf '%s\n%s\n' "$PY" "$REMOTE_PY" > "$stamp"
log "python for $CI_USER: $REMOTE_PY"

# ---------------------------------------------------------------- env.sh for the tests
cat > "$STATE/env.sh" <<ENV
# written by tests/infra/up.sh; source it before running the slurm/ssh tests
export FIBTUI_INFRA=$STATE
export SLURM_CONF=$STATE/slurm.conf
export FIBTUI_SSH_CONFIG=$STATE/ssh_config
export FIBTUI_KNOWN_HOSTS=$STATE/ssh/known_hosts
export FIBTUI_SSH_HOST=$SSH_ALIAS
export FIBTUI_SSH_USER=$CI_USER
export FIBTUI_SSH_WORKDIR=$STATE/work
export FIBTUI_SSH_PYTHON=$REMOTE_PY
export FIBTUI_SLURM_PARTITIONS=debug,high
ENV
chmod 644 "$STATE/env.sh"
log "up: . $STATE/env.sh"
