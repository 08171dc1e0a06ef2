# Helpers shared by the benchmark scripts (sourced, not run).

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) exit 1; print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
calc() { awk "BEGIN {printf \"$1\", $2}"; }

# The share of all CPUs busy over 2 s, and the load average.
background_load() {
    local a b
    a=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
    sleep 2
    b=$(awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6}' /proc/stat)
    awk -v a="$a" -v b="$b" -v l="$(cut -d' ' -f1-3 /proc/loadavg)" 'BEGIN {
        split(a, x, " "); split(b, y, " "); busy = y[1] - x[1]; idle = y[2] - x[2]
        pct = (busy + idle) > 0 ? 100 * busy / (busy + idle) : 0
        printf "%.0f%% of CPU busy with other work (2 s sample), load average %s%s", pct, l,
            (pct > 10 ? "  WARNING: not a quiet machine" : "") }'
}

# Every script runs from the repository's root.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

# The machine, as two header lines.
machine_lines() {
    local cpu_model cpu_flags mem_total mem_avail
    cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    cpu_flags=$(grep -m1 -o -w -e sha_ni -e avx2 -e avx512f /proc/cpuinfo | sort -u | tr '\n' ' ' || true)
    mem_total=$(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
    mem_avail=$(awk '/^MemAvailable/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)
    echo "machine : $(nproc) CPUs, ${cpu_model:-unknown CPU} (${cpu_flags% }), kernel $(uname -r)"
    echo "memory  : ${mem_total} total, ${mem_avail} available"
}

# What was built: the commit, and a hash of uncommitted changes to the code if any (read right
# after the build; another edit during it would not show here).
built_line() {
    local dirty
    dirty=$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null | awk '{print $2}' | tr '\n' ' ' || true)
    echo "built   : $(git rev-parse --short HEAD 2>/dev/null || echo '?')${dirty:+ + uncommitted changes to ${dirty% } (diff $(git diff HEAD -- crates Cargo.toml Cargo.lock | sha256sum | cut -c1-12))}"
}

# Cargo's target directory (CARGO_TARGET_DIR or the workspace's), as TARGET, after checking that
# each named release binary (relative to release/) was built.
find_release() { # BINARY...
    local b
    TARGET=$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
    for b in "$@"; do
        [ -x "$TARGET/release/$b" ] || die "no $TARGET/release/$b after the build"
    done
}

# nginx, wrk and curl, apt-get installed if missing (as root); sets NGINX.
find_nginx() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
need_web_tools() {
    local missing=()
    [ -n "$(find_nginx)" ] || missing+=(nginx-light)
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    if ((${#missing[@]})); then
        [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: install them, or run as root so this script can"
        log "installing ${missing[*]}"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
    fi
    NGINX=$(find_nginx)
    [ -n "$NGINX" ] || die "nginx not found even after installing"
}
web_tools_line() {
    echo "tools   : $("$NGINX" -v 2>&1 | sed 's/^nginx version: //'), $(curl --version | head -1 | cut -d' ' -f1-2), $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
}

# Between measurements, with our servers idle: remembers the busiest sample of other work.
OTHER_MAX=0
quiet_check() {
    local line pct
    line=$(background_load)
    pct=${line%%%*}
    [ "$pct" -le "$OTHER_MAX" ] || OTHER_MAX=$pct
    [ "$pct" -le 10 ] || log "warning: between measurements: $line"
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
    local p=$1
    while port_in_use "$p"; do
        p=$((p + 1))
        [ "$p" -lt $(($1 + 100)) ] || die "no free port from $1"
    done
    echo "$p"
}
# Sets NGINX_PORT and TC_PORT (two different free ports, from NGINX_PORT_BASE and TC_PORT_BASE) and
# NG_URL and TC_URL.
pick_ports() {
    NGINX_PORT=$(pick_port "$NGINX_PORT_BASE")
    TC_PORT=$(pick_port "$TC_PORT_BASE")
    [ "$TC_PORT" != "$NGINX_PORT" ] || TC_PORT=$(pick_port $((NGINX_PORT + 1)))
    NG_URL="http://127.0.0.1:$NGINX_PORT"
    TC_URL="http://127.0.0.1:$TC_PORT"
}
wait_http() { # URL [seconds]
    local i
    for ((i = 0; i < ${2:-30} * 10; i++)); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
# Waits until an HTTP server answers at URL, whatever the status (an S3 server's 403 too).
wait_answer() { # URL
    local i
    for ((i = 0; i < 300; i++)); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true)" != 000 ] && return 0
        sleep 0.1
    done
    return 1
}
# Waits until process $1 uses (almost) no CPU, e.g. after its background MD5 of new blobs.
wait_idle() {
    local pid=$1 a b i
    for ((i = 0; i < 240; i++)); do
        a=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        sleep 0.5
        b=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        [ $((b - a)) -le 2 ] && return 0
    done
    log "warning: process $pid still busy after 120 s"
}

# Starts nginx serving directory $1 on 127.0.0.1:$2, with its configuration, logs and temp files
# under $3 (Debian-like defaults: sendfile, tcp_nopush, combined access log; $4 = off writes no
# access log), ready once it answers GET /$5 (default: /ok, a file the caller wrote into $1); sets
# NGINX_PID. Needs NGINX (need_web_tools).
start_nginx() { # ROOT PORT DIR [ACCESS-LOG: on (default) | off] [PROBE-PATH]
    local root=$1 port=$2 ng=$3 access=${4:-on} probe=${5:-ok} temp_paths nginx_build m access_log
    case $access in
    on) access_log="access_log $ng/access.log;" ;;
    off) access_log="access_log off;" ;;
    *) die "start_nginx: access log '$access' is neither on nor off" ;;
    esac
    mkdir -p "$ng/tmp"
    temp_paths="client_body_temp_path $ng/tmp/body; proxy_temp_path $ng/tmp/proxy;"
    nginx_build=$("$NGINX" -V 2>&1)
    for m in fastcgi uwsgi scgi; do
        grep -q -- "--without-http_${m}_module" <<<"$nginx_build" || temp_paths+=" ${m}_temp_path $ng/tmp/$m;"
    done
    cat >"$ng/nginx.conf" <<CONF
# Generated by bench/$(basename "$0"). Debian-like defaults: sendfile, tcp_nopush, $([ "$access" = on ] && echo 'combined access log' || echo 'no access log').
$([ "$(id -u)" = 0 ] && echo 'user root;  # the scratch directory is private to root')
worker_processes auto;
daemon off;
pid $ng/nginx.pid;
lock_file $ng/nginx.lock;
error_log $ng/error.log warn;
events { worker_connections 4096; }
http {
    $access_log
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    $temp_paths
    server {
        listen 127.0.0.1:$port;
        root $root;
    }
}
CONF
    log "starting nginx on http://127.0.0.1:$port (access log $access)"
    "$NGINX" -p "$ng/" -c "$ng/nginx.conf" -e "$ng/error.log" &
    NGINX_PID=$!
    wait_http "http://127.0.0.1:$port/$probe" || { cat "$ng/error.log" >&2; die "nginx did not start"; }
}

# A scratch directory under /var/tmp as SCRATCH, removed on exit (KEEP=1 keeps it), and PIDS: the
# processes started into it, killed on exit.
make_scratch() { # NAME
    SCRATCH=$(mktemp -d "/var/tmp/tiercache-bench-$1.XXXXXX")
    PIDS=()
    trap cleanup_scratch EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
cleanup_scratch() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $SCRATCH"; else rm -rf "$SCRATCH"; fi
    exit "$rc"
}
