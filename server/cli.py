"""`sft-eraser serve`: flags from ServerSettings; secrets only from the environment."""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from pathlib import Path

import uvicorn

from server.settings import ENV_PREFIX, ServerSettings

# Secrets on a command line are visible to every user of the machine (ps); env only.
ENV_ONLY = {"admin_token"}
REQUIRED = {"carrier", "store"}


def add_command(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve a carrier model with per-request erasers (OpenAI-compatible HTTP API)",
        description=f"Every flag can also be set as an environment variable {ENV_PREFIX}<FLAG> "
        f"(e.g. {ENV_PREFIX}PORT=9000); flags win. The admin token is read from "
        f"{ENV_PREFIX}ADMIN_TOKEN only.",
    )
    for name, field in ServerSettings.model_fields.items():
        if name in ENV_ONLY:
            continue
        kwargs = _argument(field.annotation)
        default = "required unless set in the environment" if name in REQUIRED else field.default
        p.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=argparse.SUPPRESS,  # unset flags leave the environment and defaults in charge
            help=f"{field.description or name} (default: {default})",
            **kwargs,
        )
    p.set_defaults(func=serve)


def _argument(annotation) -> dict:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is typing.Literal:
        return {"choices": typing.get_args(annotation)}
    if annotation in (int, float, Path):
        return {"type": annotation}
    return {"type": str}


def serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from eraser_store import EraserFormatError, EraserStoreError
    from server.app import create_app
    from server.auth import KeyFileError

    given = {k: v for k, v in vars(args).items() if k in ServerSettings.model_fields}
    try:
        settings = ServerSettings(**given)
        app = create_app(settings)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in e.errors()
        )
        return _fail(problems)
    except (EraserFormatError, EraserStoreError, KeyFileError) as e:
        return _fail(str(e))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    DrainingServer(config, app).run()
    return 0


class DrainingServer(uvicorn.Server):
    """Reports 'draining' on /ready from the moment a shutdown signal arrives; uvicorn then lets
    requests in flight finish (up to shutdown_timeout_s) before the lifespan stops the engine."""

    def __init__(self, config: uvicorn.Config, app):
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig, frame) -> None:
        self.app.state.server.draining = True
        super().handle_exit(sig, frame)


def _fail(message: str) -> int:
    print(f"sft-eraser serve: error: {message}", file=sys.stderr)
    return 2
