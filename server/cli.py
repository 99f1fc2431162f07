"""`sft-eraser serve`: flags from ServerSettings; secrets only from the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import types
import typing
from pathlib import Path

import uvicorn

from server.settings import ENV_PREFIX, ServerSettings

log = logging.getLogger(__name__)

# Secrets on a command line are visible to every user of the machine (ps); env only.
ENV_ONLY = {"admin_token"}
REQUIRED = {"carrier", "store"}
# vLLM's own name for a setting, accepted too.
ALIASES = {"max_batch_size": ["--max-num-seqs"]}


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
            *ALIASES.get(name, []),
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
    from server.engines import EngineUnavailable

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
    except (EraserFormatError, EraserStoreError, KeyFileError, EngineUnavailable) as e:
        return _fail(str(e))
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
    )
    DrainingServer(config, app, settings.shutdown_timeout_s).run()
    return 0


# uvicorn cancels the responses still open when its graceful timeout ends, cutting their
# connections; it waits this much past the drain so that the 503s written then reach the client.
ERROR_FLUSH_S = 5.0


class DrainingServer(uvicorn.Server):
    """Reports 'draining' on /ready from the moment a shutdown signal arrives; uvicorn then lets
    requests in flight finish for up to `drain_s`, when the engine stops and fails those left
    with a 503 (an error event on a stream), before uvicorn's own timeout would cut them."""

    def __init__(self, config: uvicorn.Config, app, drain_s: float):
        config.timeout_graceful_shutdown = drain_s + ERROR_FLUSH_S
        super().__init__(config)
        self.app, self.drain_s = app, drain_s

    def handle_exit(self, sig, frame) -> None:
        self.app.state.server.draining = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets=None) -> None:
        stopper = asyncio.create_task(self._stop_engine_after_drain())
        try:
            await super().shutdown(sockets)
        finally:
            stopper.cancel()

    async def _stop_engine_after_drain(self) -> None:
        await asyncio.sleep(self.drain_s)
        engine = self.app.state.server.engine
        if engine is not None:
            try:
                await asyncio.to_thread(engine.shutdown, 0)
            except Exception:  # the lifespan stops it again; say why this one failed
                log.exception("stopping the engine after the drain failed")


def _fail(message: str) -> int:
    print(f"sft-eraser serve: error: {message}", file=sys.stderr)
    return 2
