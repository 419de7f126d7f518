#!/bin/bash
# Build everything and run every test: the gcc build (all suites), the
# ASan+UBSan build (unit suite) and a -Werror clang build with libFuzzer
# targets (unit suite plus short fuzz runs). Prints one line
# "N passed, N failed[, N skipped]" at the end; exits non-zero on any failure.
#   SUITES="unit kvm"  run only these suites in the main build (the 'lab'
#                      suite, when run, goes last with nothing beside it)
#   TIMEOUT_MULT=3     multiplier of the per-test timeouts in meson.build
#                      (they are hang guards; a slower CI machine needs room)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
summary="$root/build/check-summary.txt"

scripts/install-deps.sh || { echo "check: installing dependencies failed" >&2; exit 1; }

setup() { # dir, extra meson args...
    local dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
    elif [ $# -gt 0 ]; then # an older build dir: make sure it has this script's options
        meson configure "$dir" "$@" >"$dir.setup.log" 2>&1 || { cat "$dir.setup.log"; return 1; }
    fi
    ninja -C "$dir" >"$dir.ninja.log" 2>&1 || { tail -60 "$dir.ninja.log"; return 1; }
}

count() { # testlog.json -> "pass fail skip"
    python3 - "$1" <<'PY'
import json, sys
p = f = s = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"): p += 1
        elif r == "SKIP": s += 1
        else: f += 1
except FileNotFoundError:
    pass
print(p, f, s)
PY
}

pass=0 fail=0 skip=0
add() { read -r a b c <<<"$1"; pass=$((pass + a)); fail=$((fail + b)); skip=$((skip + c)); }

mkdir -p build
# 1. gcc build, every suite
if setup build; then
    # The Linux lab runs last and alone: its L1 is a QEMU-TCG guest on both
    # cores, and its nested guests have failed more often while other tests
    # (DPDK pollers among them) competed for the CPUs (docs/linux-lab.md).
    run_suites() { # testlog name, parallel tests, meson test arguments...
        local name=$1 jobs=$2; shift 2
        meson test -C build --print-errorlogs --timeout-multiplier "${TIMEOUT_MULT:-3}" --num-processes "$jobs" "$@" || true
        add "$(count build/meson-logs/testlog.json)"
        mv build/meson-logs/testlog.json "build/meson-logs/$name" 2>/dev/null
    }
    main=1 lab=1 main_args=(--no-suite lab)
    if [ -n "${SUITES:-}" ]; then
        main=0 lab=0 main_args=()
        for s in $SUITES; do
            if [ "$s" = lab ]; then lab=1; else main=1 main_args+=(--suite "$s"); fi
        done
    fi
    rm -f build/meson-logs/testlog-main.json build/meson-logs/testlog-lab.json
    [ "$main" = 1 ] && run_suites testlog-main.json 2 "${main_args[@]}"
    [ "$lab" = 1 ] && run_suites testlog-lab.json 1 --suite lab
else
    echo "check: gcc build failed" >&2; fail=$((fail + 1))
fi

# 2. ASan + UBSan build of the unit tests
if setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
    ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        meson test -C build-asan --print-errorlogs --timeout-multiplier "${TIMEOUT_MULT:-3}" --num-processes 2 --suite unit || true
    add "$(count build-asan/meson-logs/testlog.json)"
else
    echo "check: ASan build failed" >&2; fail=$((fail + 1))
fi

# 3. clang -Werror build with the libFuzzer targets: the unit suite again,
#    which then includes short fuzz runs (20 s or less each) of the image,
#    boot-loader, config and packet parsers over their kept corpora.
if CC=clang setup build-clang -Dfuzz=true; then
    meson test -C build-clang --print-errorlogs --timeout-multiplier "${TIMEOUT_MULT:-3}" --num-processes 2 --suite unit || true
    add "$(count build-clang/meson-logs/testlog.json)"
else
    echo "check: clang build failed" >&2; fail=$((fail + 1))
fi

# The failures again, just above the summary line, so that a log cut to its
# last lines still names them: build, test, result and the end of its output.
report() { # build dir, testlog file
    python3 - "$1/meson-logs/$2" "$1" <<'PY'
import json, sys
try:
    lines = open(sys.argv[1]).readlines()
except FileNotFoundError:
    sys.exit(0)
for line in lines:
    r = json.loads(line)
    if r.get("result") in ("OK", "EXPECTEDFAIL", "SKIP"):
        continue
    print(f"FAILED {sys.argv[2]}: {r.get('name')} ({r.get('result')}, {float(r.get('duration') or 0):.1f} s)")
    out = ((r.get("stdout") or "") + (r.get("stderr") or "")).splitlines()
    for l in out[-25:]:
        print("    " + l[:300])
PY
}
if [ "$fail" -gt 0 ]; then
    echo "---- failed tests ----"
    report build testlog-main.json
    report build testlog-lab.json
    for d in build-asan build-clang; do report "$d" testlog.json; done
fi

line="$pass passed, $fail failed"
[ "$skip" -gt 0 ] && line="$line, $skip skipped"
echo "$line" >"$summary"
echo "$line"
[ "$fail" -eq 0 ]
