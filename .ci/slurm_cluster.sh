#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for runner's SLURM tests and CI: `start`, `stop`, `status`, `env`.
#
#   .ci/slurm_cluster.sh start        # installs Debian's packages when missing, starts munge, MariaDB,
#                                     # slurmdbd, slurmctld and slurmd as root (no systemd, no cgroups)
#   eval "$(.ci/slurm_cluster.sh env)"  # SLURM_CONF for sbatch, squeue, sacct in this shell
#   .ci/slurm_cluster.sh stop         # stops exactly the daemons it started (by their pid files)
#
# Idempotent: `start` on a running cluster only checks it. Everything lives in $RUNNER_SLURM_DIR
# (default /tmp/runner-slurm); nothing under /etc is changed. Accounting (slurmdbd + MariaDB) is on because
# submitit polls sacct: without it a cancelled job is never seen finished and a sweep waits forever.
# Exit status: 0 started (or already up), 2 cannot start here (not root, no apt, a daemon failed: the reason
# is printed, and tests skip with it).
set -euo pipefail

DIR=${RUNNER_SLURM_DIR:-/tmp/runner-slurm}
CLUSTER=runner
PARTITION=debug
DB_PORT=${RUNNER_SLURM_DB_PORT:-3317}
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

die() { echo "slurm_cluster: $*" >&2; exit 2; }

export SLURM_CONF=$DIR/etc/slurm.conf

running() {  # the daemon of pid file $1 is alive
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...: retry COMMAND until it succeeds
    local seconds=$1 what=$2; shift 2
    for ((i = 0; i < seconds * 5; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up in ${seconds}s; see $DIR/log/"
}

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
    echo "slurm_cluster: installing ${missing[*]}" >&2
    # policy-rc.d keeps the packages' own services from starting (this script starts its own daemons)
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; made_policy=1; fi
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
      { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; }
    } > "$DIR/log/apt.log" 2>&1 || { ((made_policy)) && rm -f $policy; die "apt-get install failed; see $DIR/log/apt.log"; }
    ((made_policy)) && rm -f $policy
    return 0
}

write_configs() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10))  # 80%: leave the OS its share
    cat > "$DIR/etc/slurm.conf" <<EOF
# written by .ci/slurm_cluster.sh: a single-node cluster on localhost, daemons as root, no cgroups
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
# a cancelled or timed-out job gets SIGTERM, then SIGKILL this many seconds later (room to save its fit state)
KillWait=10
MinJobAge=600
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePass=$DIR/munge/munge.socket
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$DIR/etc/slurmdbd.conf" <<EOF
# written by .ci/slurm_cluster.sh
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
DbdHost=localhost
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=runner-slurm
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
}

start_munge() {
    running "$DIR/run/munged.pid" && return 0
    [[ -s $DIR/munge/munge.key ]] || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$DIR/munge/munge.key"
    munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munge.seed" \
        || die "munged did not start; see $DIR/log/munged.log"
    wait_for 10 munged munge --socket="$DIR/munge/munge.socket" -n
}

sql() { mariadb --socket="$DIR/mysql/mysqld.sock" -u root "$@"; }

start_mariadb() {
    running "$DIR/run/mariadbd.pid" && return 0
    if [[ ! -d $DIR/mysql/data/mysql ]]; then
        mariadb-install-db --user=root --datadir="$DIR/mysql/data" --auth-root-authentication-method=socket \
            --skip-test-db > "$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $DIR/log/"
    fi
    (setsid mariadbd --no-defaults --user=root --datadir="$DIR/mysql/data" --socket="$DIR/mysql/mysqld.sock" \
        --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$DIR/run/mariadbd.pid" \
        --log-error="$DIR/log/mariadbd.log" --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
        --skip-name-resolve < /dev/null > /dev/null 2>&1 &)
    wait_for 30 MariaDB sql -e "SELECT 1"
    sql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
            CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'runner-slurm';
            CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'runner-slurm';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
            GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';" || die "cannot create the accounting database"
}

start_slurm() {
    if ! running "$DIR/run/slurmdbd.pid"; then
        slurmdbd || die "slurmdbd did not start; see $DIR/log/slurmdbd.log"
        wait_for 30 slurmdbd sacctmgr -n list cluster
    fi
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" ||
        sacctmgr -i add cluster "$CLUSTER" > /dev/null || die "sacctmgr cannot add the cluster"
    if ! running "$DIR/run/slurmctld.pid"; then
        slurmctld || die "slurmctld did not start; see $DIR/log/slurmctld.log"
        wait_for 30 slurmctld scontrol ping
    fi
    if ! running "$DIR/run/slurmd.pid"; then
        slurmd || die "slurmd did not start; see $DIR/log/slurmd.log"
    fi
    wait_for 60 "the node" node_idle
}

node_idle() { sinfo -h -o %T | grep -qE '^(idle|mixed|allocated)'; }

start() {
    [[ $(id -u) == 0 ]] || die "needs root (it starts the SLURM daemons as root); run it as root or with sudo"
    mkdir -p "$DIR"/{etc,state,spool,run,log,munge,mysql}
    chmod 700 "$DIR/munge"
    install_packages
    write_configs
    start_munge
    start_mariadb
    start_slurm
    echo "slurm_cluster: up (partition $PARTITION, $(nproc) CPUs); eval \"\$($0 env)\" to use it" >&2
}

stop() {
    local pids=()
    for daemon in slurmd slurmctld slurmdbd mariadbd munged; do  # clients first, the stores they write last
        local pidfile=$DIR/run/$daemon.pid
        if running "$pidfile"; then
            local pid; pid=$(cat "$pidfile")
            kill "$pid"
            for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
            pids+=("$daemon")
        fi
        rm -f "$pidfile"
    done
    echo "slurm_cluster: stopped ${pids[*]:-nothing (none was running)}" >&2
}

status() {
    for daemon in munged mariadbd slurmdbd slurmctld slurmd; do
        running "$DIR/run/$daemon.pid" || { echo "slurm_cluster: $daemon is not running" >&2; exit 1; }
    done
    node_idle || { echo "slurm_cluster: the node is not up: $(sinfo -h -o '%T %E' 2>&1)" >&2; exit 1; }
    echo "slurm_cluster: up" >&2
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
