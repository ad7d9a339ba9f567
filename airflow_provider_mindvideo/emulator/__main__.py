"""``python -m airflow_provider_mindvideo.emulator``: serve the emulator until interrupted."""

from __future__ import annotations

import argparse
import json
import sys

from airflow_provider_mindvideo.emulator.state import DEFAULT_API_KEY, EmulatorConfig, EmulatorState


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mindvideo-emulator",
        description="Serve the MindVideo emulator (a local MindVideo API, no charges) until interrupted.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help=f"accepted key, repeatable (default {DEFAULT_API_KEY})",
    )
    parser.add_argument("--queued-seconds", type=float, default=0.2)
    parser.add_argument("--image-seconds", type=float, default=0.8, help="processing time of image models")
    parser.add_argument("--video-seconds", type=float, default=3.0, help="processing time of video models")
    parser.add_argument("--rate-limit", type=float, help="API requests per second per key before 429s (default: none)")
    parser.add_argument("--port-file", help="write the bound port here once listening (for scripts)")
    parser.add_argument(
        "--extra-model",
        action="append",
        default=[],
        metavar="SLUG=KIND",
        help="accept a model newer than the catalogue, KIND image or video (repeatable); other unknown models get 422",
    )
    args = parser.parse_args(argv)
    extra_models = {}
    for item in args.extra_model:
        slug, _, kind = item.partition("=")
        if not slug or kind not in ("image", "video"):
            parser.error(f"--extra-model {item!r}: expected SLUG=image or SLUG=video")
        extra_models[slug] = kind

    import uvicorn

    from airflow_provider_mindvideo.emulator.app import create_app

    state = EmulatorState(
        EmulatorConfig(
            api_keys=tuple(args.api_keys or [DEFAULT_API_KEY]),
            queued_seconds=args.queued_seconds,
            processing_seconds={"image": args.image_seconds, "video": args.video_seconds},
            rate_limit=args.rate_limit,
            extra_models=extra_models,
        )
    )
    server = uvicorn.Server(uvicorn.Config(create_app(state), host=args.host, port=args.port, log_level="warning"))

    if args.port_file:
        original_startup = server.startup

        async def startup(sockets: object = None) -> None:
            await original_startup(sockets=sockets)  # type: ignore[arg-type]
            port = server.servers[0].sockets[0].getsockname()[1]
            with open(args.port_file, "w") as handle:
                handle.write(str(port))

        server.startup = startup  # type: ignore[method-assign]
    print(json.dumps({"emulator": f"http://{args.host}:{args.port}", "api_keys": list(state.config.api_keys)}))
    sys.stdout.flush()
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
