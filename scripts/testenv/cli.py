"""`scripts/kube-testenv build|bin|up|check|down|status`.

`up` starts from an empty state directory: what an earlier, interrupted start left there
(processes of that directory, etcd data, certificates) is stopped and removed first, and
said so on stderr. It ends by running one Job through the bed; `check` runs that again.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from testenv import bed, build, go_example, selfcheck


def default_dir() -> Path:
    return Path(os.environ.get("KSR_TESTENV_DIR", f"/tmp/ksr-testenv-{os.getuid()}"))


def say(message: str) -> None:
    print(f"kube-testenv: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kube-testenv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build etcd, the control plane, kwok and helm from the Go module proxy (cached)")
    b.add_argument("--force", action="store_true", help="rebuild even if the cache is complete")
    sub.add_parser("bin", help="print the directory holding the built binaries")
    sub.add_parser("go-example", help="build the Go producer example (clients/go-example), cached by source hash")
    for name, text in (
        ("up", "start the control plane from a clean --dir and print `export KUBECONFIG=...`"),
        ("check", "run one Job through the bed in --dir (the start-up check) and say what failed"),
        ("down", "stop everything `up` started in --dir (and any leftover of an interrupted start)"),
        ("status", "say which components run"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", type=Path, default=default_dir(), help="state directory (default: %(default)s)")
        if name == "up":
            p.add_argument("--bench", action="store_true", help="raise the controllers' client limits (benchmarks)")
        if name in ("up", "check"):
            p.add_argument("--check-timeout", type=float, default=60.0, help="seconds for the Job (default: 60)")
    args = parser.parse_args(argv)

    if args.command == "build":
        build.build(force=args.force)
    elif args.command == "bin":
        print(build.bin_dir())
    elif args.command == "go-example":
        print(go_example.build())
    elif args.command == "up":
        try:
            started = bed.up(args.dir, progress=say, bench=args.bench, check_timeout=args.check_timeout)
        except (RuntimeError, TimeoutError) as e:  # up stopped what it started
            say(f"up failed: {e}")
            return 1
        print(f"export KUBECONFIG={started.kubeconfig}")
    elif args.command == "check":
        if not (args.dir / "state.json").exists():
            say(f"nothing started from {args.dir}")
            return 1
        try:
            took = selfcheck.run(bed.Bed.load(args.dir.resolve()), timeout=args.check_timeout)
        except (selfcheck.CheckFailed, OSError) as e:
            say(f"check failed: {e}")
            return 1
        say(f"a Job ran to Complete in {took:.1f}s")
    elif args.command == "down":
        stopped = bed.down(args.dir)
        say(f"stopped {', '.join(stopped) or 'nothing'}")
    elif args.command == "status":
        if not (args.dir / "state.json").exists():
            print(f"nothing started from {args.dir}")
            return 1
        state = bed.Bed.load(args.dir)
        running = state.running()
        for name in bed.COMPONENTS:
            info = state.procs.get(name, {})
            print(f"{name:24} {'running' if running.get(name) else 'stopped':8} pid={info.get('pid') or '-'}")
        print(f"server {state.server}\nkubeconfig {state.kubeconfig}")
        print(f"start finished {'yes' if state.ready else 'no (interrupted or failed: the next up starts fresh)'}")
        return 0 if all(running.values()) else 1
    return 0
