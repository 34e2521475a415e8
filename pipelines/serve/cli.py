"""`sift serve --runs DIR`: the web view of the runs under DIR (local folder or s3:// / gs:// prefix).

    sift serve --runs runs                    # http://127.0.0.1:8470, uvicorn in this process
    sift serve --runs s3://bucket/runs --ray-serve --host 0.0.0.0   # on a Ray cluster, behind its access controls

The service is read-only and has no authentication of its own: it binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

DEFAULT_PORT = 8470


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def deploy_on_ray(runs: str, host: str, port: int, replicas: int = 1) -> str:
    """Deploy the app with Ray Serve on the connected Ray cluster (RAY_ADDRESS, or a local one); returns its URL.

    Each replica builds its own app from `runs` (a path every node can read: an object store or a shared folder)."""
    from ray import serve

    from pipelines.layout import init_ray
    from pipelines.serve.app import app_builder

    init_ray(None)
    serve.start(http_options={"host": host, "port": port})
    deployment = serve.deployment(serve.ingress(app_builder(runs))(), name="sift-serve", num_replicas=replicas,
                                  ray_actor_options={"num_cpus": 0.1})  # I/O-bound: leave the CPUs to curation
    serve.run(deployment.bind(), name="sift", route_prefix="/", blocking=False)
    return f"http://{host}:{port}/"


def serve_with_ray(runs: str, host: str, port: int) -> None:
    """`deploy_on_ray`, then wait for Ctrl-C."""
    import time

    import ray
    from ray import serve

    url = deploy_on_ray(runs, host, port)
    print(f"sift serve on Ray Serve: open {url}  (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
        ray.shutdown()


def main(argv: list[str] | None = None, prog: str = "sift serve") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--runs", default="runs", help="folder (or s3:// / gs:// prefix) holding sift runs (default: runs)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--ray-serve", action="store_true", help="serve with Ray Serve on the Ray cluster (RAY_ADDRESS)")
    args = p.parse_args(argv)
    from pipelines.serve.catalog import NotFound, list_runs

    try:
        runs = list_runs(args.runs)
    except NotFound as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    if not _is_loopback(args.host):
        print(f"warning: binding to {args.host}: sift serve has no authentication of its own; anyone who can reach "
              f"this port can read every document under {args.runs}. Keep it behind the cluster's access controls.",
              file=sys.stderr)
    print(f"{len(runs)} runs under {args.runs}", flush=True)
    if args.ray_serve:
        serve_with_ray(args.runs, args.host, args.port)
        return 0
    import uvicorn

    from pipelines.serve.app import create_app

    print(f"sift serve: open http://{args.host}:{args.port}/  (Ctrl-C stops)", flush=True)
    uvicorn.run(create_app(args.runs), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
