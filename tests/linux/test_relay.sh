#!/bin/bash
# Unit test of lab-relay (tests/linux/relay.c), the L1-side console relay of
# the Linux lab: prefixing, log copy, marker detection, exit status
# pass-through, time limit, kernel-panic grace kill, CR stripping, long lines
# and bad arguments. Usage: test_relay.sh PATH-TO-lab-relay
set -u
relay=${1:?usage: test_relay.sh lab-relay}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok: $1"; }
bad() { echo "NOT OK: $1"; fails=$((fails + 1)); }
field() { # summary-line key -> value
    sed -n "s/^LAB-L1 relay .*\b$2=\(-\?[0-9]*\).*/\1/p" "$1"
}

# 1. prefix, log copy, marker, exit status
"$relay" -p 'P ' -m MARK -o "$tmp/log" -- sh -c 'echo first; echo "the MARK line"; exit 3' >"$tmp/out"
rc=$?
[ $rc -eq 3 ] && ok "exit status passes through" || bad "exit status $rc, want 3"
grep -qx 'P first' "$tmp/out" && grep -qx 'P the MARK line' "$tmp/out" &&
    ok "lines relayed with the prefix" || bad "prefixed lines missing: $(cat "$tmp/out")"
printf 'first\nthe MARK line\n' | cmp -s - "$tmp/log" && ok "log holds the unprefixed console" ||
    bad "log file differs: $(cat "$tmp/log")"
[ "$(field "$tmp/out" exit)" = 3 ] && [ "$(field "$tmp/out" timeout)" = 0 ] &&
    [ "$(field "$tmp/out" init_ms)" != -1 ] && [ -n "$(field "$tmp/out" init_ms)" ] &&
    ok "summary: exit=3 timeout=0, marker seen" || bad "summary wrong: $(tail -1 "$tmp/out")"

# 2. marker never printed
"$relay" -m MARK -- sh -c 'echo nothing here' >"$tmp/out"
[ "$(field "$tmp/out" init_ms)" = -1 ] && ok "init_ms=-1 without the marker" ||
    bad "init_ms without marker: $(tail -1 "$tmp/out")"

# 3. time limit: the VMM and its children are killed, status 124
"$relay" -t 1 -- sh -c 'echo started; sleep 30; echo never' >"$tmp/out"
rc=$?
[ $rc -eq 124 ] && [ "$(field "$tmp/out" timeout)" = 1 ] && ! grep -q never "$tmp/out" &&
    ok "time limit gives 124 and timeout=1" || bad "time limit: rc=$rc $(tail -1 "$tmp/out")"

# 3b. a VMM that closes its output but does not exit is killed at the limit
"$relay" -t 2 -- sh -c 'echo closing; exec >&- 2>&-; sleep 30' >"$tmp/out"
rc=$?
[ $rc -eq 124 ] && [ "$(field "$tmp/out" timeout)" = 1 ] && [ "$(field "$tmp/out" stuck)" = 0 ] &&
    ok "silent VMM that does not exit: killed at the limit" || bad "silent VMM: rc=$rc $(tail -1 "$tmp/out")"

# 3c. -a limits the time after the marker (a guest whose init hangs)
"$relay" -t 120 -a 1 -m MARK -- sh -c 'echo booting; echo MARK; sleep 20; echo late; exit 0' >"$tmp/out"
rc=$?
[ $rc -eq 124 ] && [ "$(field "$tmp/out" timeout)" = 1 ] && ! grep -q late "$tmp/out" &&
    ok "-a: killed after the marker's limit" || bad "-a: rc=$rc $(tail -1 "$tmp/out")"

# 4. a guest kernel panic: killed after the grace period, panic=1
"$relay" -t 60 -- sh -c 'echo "[ 1.0] Kernel panic - not syncing: test"; sleep 30' >"$tmp/out"
rc=$?
[ $rc -eq 137 ] && [ "$(field "$tmp/out" panic)" = 1 ] && [ "$(field "$tmp/out" timeout)" = 0 ] &&
    ok "panic: killed after the grace period, panic=1" || bad "panic: rc=$rc $(tail -1 "$tmp/out")"

# 5. serial consoles end lines with CR LF
"$relay" -p '> ' -- printf 'crlf\r\n' >"$tmp/out"
grep -qx '> crlf' "$tmp/out" && ok "CR stripped" || bad "CR kept: $(od -c "$tmp/out" | head -2)"

# 6. a line longer than the buffer is split, not lost
"$relay" -- sh -c 'head -c 10000 /dev/zero | tr "\0" x; echo' >"$tmp/out"
n=$(grep -v '^LAB-L1' "$tmp/out" | tr -d '\n' | wc -c)
[ "$n" -eq 10000 ] && ok "long line relayed in full" || bad "long line: $n bytes of 10000"

# 7. a VMM that cannot be started, bad arguments
"$relay" -- /nonexistent/vmm >"$tmp/out" 2>&1
rc=$?
[ $rc -eq 127 ] && grep -q "cannot execute '/nonexistent/vmm'" "$tmp/out" &&
    ok "missing VMM binary: 127 with its name" || bad "missing VMM: rc=$rc $(cat "$tmp/out")"
"$relay" >/dev/null 2>&1; rc1=$?
"$relay" -t nonsense -- true >/dev/null 2>&1; rc2=$?
"$relay" -a 5x -- true >/dev/null 2>&1; rc3=$?
[ $rc1 -eq 2 ] && [ $rc2 -eq 2 ] && [ $rc3 -eq 2 ] && ok "bad arguments: status 2" ||
    bad "bad arguments: $rc1 $rc2 $rc3"

[ $fails -eq 0 ] && echo "relay: all passed" || echo "relay: $fails failed"
[ $fails -eq 0 ]
