#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, without systemd: munged, slurmctld and slurmd for `bonas slurm`
# and tests/test_slurm.py. Idempotent: `start` writes /etc/slurm/slurm.conf (only if absent or written by
# this script), starts what is not running, and waits until the node is idle; `stop` ends the daemons it
# started (by their pid files); `status` prints the daemons and `sinfo`.
#
#   bash .ci/slurm.sh start|stop|status
#
# Needs root and Debian's slurmctld, slurmd and munge packages (.ci/run installs them).
set -euo pipefail

STATE=/var/lib/bonas-slurm          # slurmctld's saved state, slurmd's spool, pid files
LOGS=$STATE/log                     # slurmctld.log, slurmd.log (munged's: $STATE/munge/munged.log)
CONF=/etc/slurm/slurm.conf          # the default path, so sbatch/squeue/scancel need no SLURM_CONF
MARK="# written by bonas .ci/slurm.sh"
WAIT_S=${BONAS_SLURM_WAIT_S:-60}    # bound on waiting for the node to become idle

say() { echo "slurm.sh: $*"; }
die() { echo "slurm.sh: error: $*" >&2; exit 1; }

alive() {  # alive PIDFILE: the process named in it is running
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

write_conf() {
  local host node
  host=$(hostname -s)
  # slurmd -C: this machine's CPUs, sockets, cores, threads and memory as slurmd itself sees them (a node line
  # that claims more than slurmd finds gets the node drained)
  node=$(/usr/sbin/slurmd -C | grep -o 'CPUs=.* RealMemory=[0-9]*')
  cat <<EOF
$MARK: edit that script, not this file
ClusterName=bonas
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job (scontrol requeue, preemption, node failure) waits cred_expire seconds before it may start
# again (default 120): 10 s lets a test requeue an array task and see it rejoin the study; on one node
# nothing needs long-lived launch credentials.
AuthInfo=cred_expire=10
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups (none usable in a container): processes are tracked through their parent pids, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# A requeued task becomes eligible cred_expire seconds later, an event nothing announces: without these it
# waits for the next periodic pass (main loop every 60 s, backfill every 30 s). A one-node cluster scans fast.
SchedulerParameters=sched_interval=2,bf_interval=2
MailProg=/bin/true
# scancel, a time limit or preemption sends SIGTERM, then SIGKILL after KillWait. A bonas worker needs about a
# second to end its trial as FAIL and requeue its params; 10 s (default 30) leaves room for a slow database
# and keeps a test's cancel -> task gone short. A worker that is SIGKILLed anyway is reaped by its heartbeat.
KillWait=10
# A finished job's record (state, exit code: the only record, without accounting) stays 300 s in slurmctld's
# memory: enough for a test to read its tasks' exit codes with scontrol; job ids keep increasing, so arrays
# submitted back to back never collide.
MinJobAge=300
# A node that went DOWN (slurmd restarted, unresponsive) comes back by itself when its slurmd registers.
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 $node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  munge -n >/dev/null 2>&1 && return
  # Not answering. A munged may still run without its socket: reinstalling the munge package removes
  # /run/munge. Its pid file lives with ours, so it can be ended and replaced.
  if alive "$STATE/munge/munged.pid"; then kill "$(cat "$STATE/munge/munged.pid")"; sleep 0.5; fi
  [ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey -c
  install -d -o munge -g munge -m 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged --log-file="$STATE/munge/munged.log" --pid-file="$STATE/munge/munged.pid" --force
  for _ in $(seq 1 50); do munge -n >/dev/null 2>&1 && return; sleep 0.1; done
  die "munged did not start; see $STATE/munge/munged.log"
}

node_state() {
  sinfo -h -N -n "$(hostname -s)" -o %T 2>/dev/null | head -1
}

start() {
  [ "$(id -u)" = 0 ] || die "needs root (the daemons run as root, munged as the munge user)"
  for bin in munged slurmctld slurmd sinfo; do
    command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] || die "$bin is missing: apt-get install slurmctld slurmd munge"
  done
  if [ -e "$CONF" ] && ! head -1 "$CONF" | grep -qF "$MARK"; then
    die "$CONF exists and was not written by this script; not touching a real cluster's config"
  fi
  install -d -m 0755 "$STATE" "$STATE/ctld" "$STATE/d" "$LOGS"
  install -d -o munge -g munge -m 0700 "$STATE/munge"
  local new changed=0
  new=$(write_conf)
  if [ ! -e "$CONF" ] || [ "$new" != "$(cat "$CONF")" ]; then
    printf '%s\n' "$new" >"$CONF"
    changed=1
  fi
  start_munge
  if [ $changed = 1 ] && { alive "$STATE/slurmctld.pid" || alive "$STATE/slurmd.pid"; }; then
    say "slurm.conf changed: restarting the daemons"
    stop_slurm
  fi
  alive "$STATE/slurmctld.pid" || /usr/sbin/slurmctld
  alive "$STATE/slurmd.pid" || /usr/sbin/slurmd
  local state="" deadline=$((SECONDS + WAIT_S))
  while [ $SECONDS -lt $deadline ]; do
    state=$(node_state || true)
    case "$state" in
      idle|mixed|allocated|completing) say "node $(hostname -s) is $state"; return 0 ;;
      drain*|down*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  die "node $(hostname -s) not idle after ${WAIT_S}s (sinfo: '${state:-no answer}'); see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

stop_slurm() {
  local f pid
  for f in slurmd slurmctld; do
    alive "$STATE/$f.pid" || continue
    pid=$(cat "$STATE/$f.pid")
    kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && die "$f (pid $pid) did not stop"
    rm -f "$STATE/$f.pid"
  done
  return 0
}

stop() {
  stop_slurm
  if alive "$STATE/munge/munged.pid"; then kill "$(cat "$STATE/munge/munged.pid")"; fi
  say "stopped"
}

status() {
  local f rc=0
  for f in "$STATE/munge/munged.pid" "$STATE/slurmctld.pid" "$STATE/slurmd.pid"; do
    if alive "$f"; then say "$(basename "$f" .pid) running (pid $(cat "$f"))"; else say "$(basename "$f" .pid) not running"; rc=1; fi
  done
  sinfo 2>&1 || rc=1
  say "logs: $LOGS"
  return $rc
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: bash $0 start|stop|status" >&2; exit 2 ;;
esac
