#!/usr/bin/env bash
# A single-node Slurm cluster on loopback, for tests and for trying `nnsplitter sweep --slurm`
# on one machine (Debian slurm-wlm + munge; run as root).
#
#   tools/slurm_local.sh [start] [DIR]   start it (or find it running); prints on stdout
#                                        `export SLURM_CONF=DIR/slurm.conf`, so that
#                                        eval "$(tools/slurm_local.sh)" sets up this shell
#   tools/slurm_local.sh stop [DIR]      stop the daemons it started (DIR is kept)
#   tools/slurm_local.sh status [DIR]    exit 0 when it is up
#
# DIR (default /tmp/nns-slurm) holds everything: slurm.conf, the munge key and socket, state,
# spool, pid and log files. Every client (sbatch, squeue, scontrol, sinfo) needs SLURM_CONF.
# Missing packages (slurm-wlm, munge) are installed with apt-get.
#
# Layout of the cluster: NodeName = `hostname -s` with NodeAddr 127.0.0.1, all CPUs (nproc)
# and the memory of /proc/meminfo less a margin; ProctrackType=proctrack/linuxproc,
# TaskPlugin=task/none, SelectType=select/cons_tres (cores and memory consumable); no
# accounting; SlurmUser/SlurmdUser root; batch_sched_delay=0 so that a 4-task array finishes
# in seconds. Ports: $NNS_SLURMCTLD_PORT (6817) and $NNS_SLURMD_PORT (6818).
set -euo pipefail

cmd=start
case "${1:-}" in
  start | stop | status) cmd=$1; shift ;;
  -h | --help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
DIR=${1:-/tmp/nns-slurm}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
CONF=$DIR/slurm.conf
CTLD_PORT=${NNS_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${NNS_SLURMD_PORT:-6818}
export SLURM_CONF=$CONF

log() { echo "slurm_local: $*" >&2; }
die() { echo "slurm_local: error: $*" >&2; exit 1; }

pid_alive() {  # pid file -> is its process alive?
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_pid() {  # pid file, name
  local f=$1 name=$2 pid
  if pid_alive "$f"; then
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

node_state() {
  sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1 || true
}

if [[ $cmd == stop ]]; then
  stop_pid "$DIR/run/slurmd.pid" slurmd
  stop_pid "$DIR/run/slurmctld.pid" slurmctld
  stop_pid "$DIR/munge/munged.pid" munged
  exit 0
fi

NODE=$(hostname -s)

if [[ $cmd == status ]]; then
  if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid" &&
    [[ $(node_state) =~ ^(idle|mixed|allocated|completing) ]]; then
    echo "export SLURM_CONF=$CONF"
    exit 0
  fi
  log "not running (DIR=$DIR)"
  exit 1
fi

# ---- start

[[ $(id -u) -eq 0 ]] || die "must run as root (SlurmUser/SlurmdUser root, munged)"

need=()
for prog in slurmctld slurmd sbatch munged; do command -v "$prog" >/dev/null || need+=("$prog"); done
if ((${#need[@]})); then
  log "installing slurm-wlm munge (missing: ${need[*]})"
  command -v apt-get >/dev/null || die "apt-get not found; install slurm-wlm and munge"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends slurm-wlm munge; } >"$DIR/apt.log" 2>&1 ||
    die "apt-get install slurm-wlm munge failed (see $DIR/apt.log)"
  for prog in slurmctld slurmd sbatch munged; do
    command -v "$prog" >/dev/null || die "$prog still missing after installing slurm-wlm munge"
  done
fi

mkdir -p "$DIR"/{state,spool,log,run,munge}
# munged insists on a socket folder that others can enter but not write.
chmod 755 "$DIR/munge"

# ---- munge
KEY=$DIR/munge/munge.key
SOCKET=$DIR/munge/munge.socket.2
if [[ ! -s $KEY ]]; then
  if command -v mungekey >/dev/null; then
    mungekey --create --keyfile="$KEY" --force >/dev/null 2>&1 ||
      dd if=/dev/urandom of="$KEY" bs=1 count=1024 status=none
  else
    dd if=/dev/urandom of="$KEY" bs=1 count=1024 status=none
  fi
  log "generated a munge key in $KEY"
fi
chmod 400 "$KEY"
if pid_alive "$DIR/munge/munged.pid"; then
  log "munged is running (pid $(cat "$DIR/munge/munged.pid"))"
else
  rm -f "$SOCKET" "$SOCKET.lock"
  munged --force --key-file="$KEY" --socket="$SOCKET" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" ||
    die "munged did not start (see $DIR/munge/munged.log)"
  for _ in $(seq 1 50); do [[ -S $SOCKET ]] && break; sleep 0.1; done
  [[ -S $SOCKET ]] || die "munged did not create $SOCKET (see $DIR/munge/munged.log)"
  log "started munged (socket $SOCKET)"
fi

# ---- slurm.conf (rewritten only while the daemons are down)
CPUS=$(nproc)
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# Margin: 10% of the memory, at least 256 MB (slurmd drains a node whose real memory is
# below RealMemory).
MARGIN=$((MEM_MB / 10 > 256 ? MEM_MB / 10 : 256))
REAL_MEM=$((MEM_MB - MARGIN > 256 ? MEM_MB - MARGIN : 256))
new_conf=$(
  cat <<EOF
# Single-node cluster on loopback written by tools/slurm_local.sh.
ClusterName=nns
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MaxArraySize=10001
MinJobAge=600
KillWait=30
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)

ctld_up=0
slurmd_up=0
pid_alive "$DIR/run/slurmctld.pid" && ctld_up=1
pid_alive "$DIR/run/slurmd.pid" && slurmd_up=1
if ((ctld_up && slurmd_up)) && [[ -f $CONF ]]; then
  log "slurmctld and slurmd are running (DIR=$DIR)"
else
  if ((ctld_up || slurmd_up)); then
    stop_pid "$DIR/run/slurmd.pid" slurmd
    stop_pid "$DIR/run/slurmctld.pid" slurmctld
  fi
  printf '%s\n' "$new_conf" >"$CONF"
  # -c: a clean start (no jobs or node states of an earlier life of this folder).
  slurmctld -c -f "$CONF" || die "slurmctld did not start (see $DIR/log/slurmctld.log)"
  for _ in $(seq 1 100); do scontrol ping >/dev/null 2>&1 && break; sleep 0.1; done
  scontrol ping >/dev/null 2>&1 || die "slurmctld does not answer (see $DIR/log/slurmctld.log)"
  slurmd -f "$CONF" || die "slurmd did not start (see $DIR/log/slurmd.log)"
  log "started slurmctld and slurmd (node $NODE, $CPUS CPUs, ${REAL_MEM} MB)"
fi

# ---- wait for the node to be idle (about a second)
state=""
for _ in $(seq 1 300); do
  state=$(node_state)
  [[ $state =~ ^(idle|mixed|allocated|completing) ]] && break
  if [[ $state =~ ^(down|drain) ]]; then
    scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
  fi
  sleep 0.1
done
[[ $state =~ ^(idle|mixed|allocated|completing) ]] ||
  die "node $NODE is '${state:-unknown}', not idle, after 30 s (see $DIR/log/slurmd.log and slurmctld.log)"
log "node $NODE is $state"
echo "export SLURM_CONF=$CONF"
