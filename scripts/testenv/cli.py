"""`scripts/kube-testenv build|up|down|status`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from testenv import bed, build, go_example


def default_dir() -> Path:
    return Path(os.environ.get("KSR_TESTENV_DIR", f"/tmp/ksr-testenv-{os.getuid()}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kube-testenv", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build etcd, the control plane, kwok and helm from the Go module proxy (cached)")
    b.add_argument("--force", action="store_true", help="rebuild even if the cache is complete")
    sub.add_parser("bin", help="print the directory holding the built binaries")
    sub.add_parser("go-example", help="build the Go producer example (clients/go-example), cached by source hash")
    for name, text in (
        ("up", "start the control plane and print `export KUBECONFIG=...`"),
        ("down", "stop everything `up` started in --dir"),
        ("status", "say which components run"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--dir", type=Path, default=default_dir(), help="state directory (default: %(default)s)")
        if name == "up":
            p.add_argument("--bench", action="store_true", help="raise the controllers' client limits (benchmarks)")
    args = parser.parse_args(argv)

    if args.command == "build":
        build.build(force=args.force)
    elif args.command == "bin":
        print(build.bin_dir())
    elif args.command == "go-example":
        print(go_example.build())
    elif args.command == "up":
        started = bed.up(args.dir, progress=lambda m: print(f"kube-testenv: {m}", file=sys.stderr), bench=args.bench)
        print(f"export KUBECONFIG={started.kubeconfig}")
    elif args.command == "down":
        stopped = bed.down(args.dir)
        print(f"kube-testenv: stopped {', '.join(stopped) or 'nothing'}", file=sys.stderr)
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
        return 0 if all(running.values()) else 1
    return 0
