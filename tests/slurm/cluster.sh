#!/usr/bin/env bash
# A throwaway one-node SLURM cluster (munged + slurmctld + slurmd, all state under <dir>) for
# the tests: cluster.sh start|stop|status <dir>. Clients use it after `. <dir>/env`.
#
# Job status: no slurmdbd, so sacct exits 1 ("accounting storage is disabled"). The executor
# plugin (2.8) defaults to sacct wherever the binary exists, so workflows pass
# `--slurm-status-command squeue`; it then polls `squeue --states=all` and stays with it as long
# as MinJobAge >= 3 x its first check interval (120 s by default). A MinJobAge of an hour keeps
# finished jobs, COMPLETED or FAILED, visible that long, which is all the plugin reads; slurmdbd
# would add MariaDB and a third daemon for nothing the tests use.
#
# Needs root (SlurmUser=root; slurmd runs jobs as their submitter) and Debian's slurm-wlm and
# munge. Environment: SLURM_TEST_PORT (first port to try, default 16817),
# SLURM_TEST_START_TIMEOUT (seconds to wait for the node to become idle, default 60),
# SLURM_TEST_CPUS (CPUs the node declares, default 8 or the host's if more; see below).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status <dir>" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
PATH=$PATH:/usr/sbin:/sbin  # where Debian puts the daemons
if [ "$cmd" = start ]; then
  mkdir -p "$2"
elif [ ! -d "$2" ]; then
  [ "$cmd" = stop ] && exit 0
  echo "cluster.sh: no cluster in $2" >&2
  exit 1
fi
dir=$(cd "$2" && pwd -P)
conf=$dir/slurm.conf
export SLURM_CONF=$conf
# Stop order: slurmd first (it reports to slurmctld), munged last (both authenticate with it).
daemons=(slurmd slurmctld munged)

pidfile() { echo "$dir/run/$1.pid"; }

# Alive and not a zombie: a daemon's exit may never be reaped where pid 1 does not reap.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }  # the fields after "pid (comm) ": the state comes first
  [ "${stat:0:1}" != Z ]
}

# The pid in <dir>/run/<daemon>.pid, printed only if that process is alive and its command line
# names <dir> (every daemon here is started with a path under <dir>): a pid the kernel has
# since reused for another process is never touched.
ours() {
  local f pid
  f=$(pidfile "$1")
  [ -s "$f" ] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$dir/" || return 1
  echo "$pid"
}

log_tails() {
  local f
  for f in "$dir"/log/*.log; do
    [ -e "$f" ] || continue
    echo "--- tail of $f" >&2
    tail -n 20 "$f" >&2
  done
}

stop() {
  local name pid i
  # Jobs outlive slurmd (their slurmstepd is a separate process): cancel them while slurmctld
  # is still there to do it, and give them a moment to end.
  if ours slurmctld >/dev/null && ours slurmd >/dev/null; then
    local jobs
    jobs=$(squeue -h -t PD,R,CG,S -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for i in $(seq 30); do
        [ -z "$(squeue -h -t PD,R,CG,S -o %i 2>/dev/null || true)" ] && break
        sleep 1
      done
    fi
  fi
  for name in "${daemons[@]}"; do
    pid=$(ours "$name") || { rm -f "$(pidfile "$name")"; continue; }
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do
      alive "$pid" || break
      sleep 0.2
    done
    if alive "$pid"; then
      echo "cluster.sh: $name ($pid) ignored SIGTERM for 20 s; sending SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 100); do
        alive "$pid" || break
        sleep 0.1
      done
      if alive "$pid"; then echo "cluster.sh: $name ($pid) survived SIGKILL" >&2; return 1; fi
    fi
    rm -f "$(pidfile "$name")"
  done
}

status() {
  local name pid rc=0
  for name in "${daemons[@]}"; do
    if pid=$(ours "$name"); then echo "$name: running ($pid)"; else echo "$name: stopped"; rc=1; fi
  done
  [ $rc -eq 0 ] && sinfo -N -o '%N %P %T %c %m'
  return $rc
}

# A TCP port is taken if something on this host accepts a connection on it.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
  local name tool
  for tool in munged slurmctld slurmd sinfo squeue unshare; do
    if ! command -v "$tool" >/dev/null; then
      echo "cluster.sh: $tool not found (apt-get install slurm-wlm munge)" >&2
      exit 3
    fi
  done
  if [ ! -d /etc/slurm ]; then
    echo "cluster.sh: /etc/slurm missing (it comes with slurm-wlm; the daemons mount $dir there)" >&2
    exit 3
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "cluster.sh: needs root (slurmctld and slurmd run as root, SlurmUser=root)" >&2
    exit 1
  fi
  for name in "${daemons[@]}"; do
    if ours "$name" >/dev/null; then echo "cluster.sh: $name already runs for $dir" >&2; exit 1; fi
  done
  # From here on a failure stops whatever was started already.
  trap 'echo "cluster.sh: start failed" >&2; log_tails; stop' ERR

  mkdir -p "$dir/run" "$dir/log" "$dir/state" "$dir/spool" "$dir/munge"
  # munged wants the key's and the socket's directory writable by root alone and the socket's
  # searchable by everyone.
  chmod 711 "$dir/munge"

  local port=${SLURM_TEST_PORT:-16817} tries=0
  while port_taken "$port" || port_taken $((port + 1)); do
    tries=$((tries + 1))
    if [ $tries -ge 20 ]; then
      echo "cluster.sh: no free port pair in 20 tries from ${SLURM_TEST_PORT:-16817}" >&2
      exit 1
    fi
    port=$((port + 10))
  done

  local key=$dir/munge/munge.key socket=$dir/munge/munge.socket
  if [ ! -s "$key" ]; then
    (umask 077; dd if=/dev/urandom of="$key" bs=1 count=1024 status=none)
  fi
  # A socket path is at most 107 bytes (sun_path).
  if [ ${#socket} -gt 107 ]; then
    echo "cluster.sh: $socket is too long for a socket; use a shorter <dir>" >&2
    false
  fi
  # --force: munged otherwise wants every directory above the socket searchable by all users,
  # which private temp dirs (pytest's are 0700) are not; only root talks to this one.
  munged --force --socket="$socket" --key-file="$key" --pid-file="$(pidfile munged)" \
    --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"

  local host node
  host=$(hostname -s)
  # slurmd -C: this host's real CPUs, sockets, cores and memory, as slurm.conf wants them.
  node=$(slurmd -C)
  node=${node%%$'\n'*}  # the NodeName= line; the next one is UpTime
  local cpus mem
  cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$node")
  mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
  # The node declares more CPUs than a small host has, so that independent jobs run side by
  # side: much of a test job's time is Python starting up, not computing, and the executor
  # plugin notices a finished job up to tens of seconds late (its status checks back off),
  # which other jobs' work then fills. Each job still gets the threads it asks for
  # (task/none binds nothing), so results are unchanged.
  local declared=${SLURM_TEST_CPUS:-8}
  if [ "$declared" -gt "$cpus" ]; then
    cpus=$declared
    node=$(sed -E "s/ CPUs=.* RealMemory=/ CPUs=$cpus Boards=1 SocketsPerBoard=1 \
CoresPerSocket=$cpus ThreadsPerCore=1 RealMemory=/" <<<"$node")
  fi
  : >"$dir/plugstack.conf"  # none of the system's SPANK plugins
  cat >"$conf" <<EOF
# Written by tests/slurm/cluster.sh; everything under $dir.
ClusterName=dmaetest
# The addresses pin every daemon to loopback; No*InAddrAny makes them bind to it alone.
SlurmctldHost=$host(127.0.0.1)
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$dir/plugstack.conf
# No cgroups (containers and CI runners rarely delegate them).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job without --mem gets its CPUs' share, not the whole node.
DefMemPerCPU=$((mem / cpus))
# Finished jobs stay visible to squeue/scontrol for an hour: the executor plugin's squeue
# status query needs at least 120 s.
MinJobAge=3600
# Schedule a submitted job at once, not up to 3 s later (the default, for high submit rates).
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
SlurmdTimeout=300
InactiveLimit=0
KillWait=5
Waittime=0
# The node below may declare more CPUs than the host has: slurmd must not drain it for that.
SlurmdParameters=config_overrides
$node NodeAddr=127.0.0.1 NodeHostname=$host State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  printf 'export SLURM_CONF=%q\n' "$conf" >"$dir/env"

  # The daemons run in a private mount namespace where /etc/slurm is this folder (the host's
  # /etc/slurm is untouched): their jobs then find this cluster's slurm.conf at the default
  # path, which the executor plugin's jobstep needs, since it drops SLURM_CONF before its
  # nested srun. A real cluster keeps its slurm.conf there, or runs configless.
  unshare --mount --propagation private \
    sh -c 'mount --bind "$1" /etc/slurm && slurmctld -f "$2" && slurmd -f "$2"' \
    cluster.sh "$dir" "$conf"

  local timeout=${SLURM_TEST_START_TIMEOUT:-60} t0=$SECONDS state=
  while [ $((SECONDS - t0)) -lt "$timeout" ]; do
    state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null || true)
    [ "$state" = idle ] && break
    for name in "${daemons[@]}"; do
      ours "$name" >/dev/null || { echo "cluster.sh: $name exited during start" >&2; false; }
    done
    sleep 0.5
  done
  if [ "$state" != idle ]; then
    echo "cluster.sh: node $host not idle after ${timeout}s (state: '${state:-no answer}')" >&2
    false
  fi
  trap - ERR
  cat "$dir/env"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
