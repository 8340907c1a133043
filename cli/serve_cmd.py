"""`modelkit serve`: serve the models of a model store over HTTP (TorchServe-style and KServe v2).

Example:
    modelkit serve --model-store models/ --port 8080 --management-port 8081
"""

from __future__ import annotations

import sys

import click


@click.command("serve")
@click.option("--model-store", required=True, type=click.Path(exists=True, file_okay=False),
              help="Directory of NAME.mkb files and NAME/VERSION/model.mkb folders.")
@click.option("--models", multiple=True, metavar="NAME",
              help="Serve only these models (repeatable); default: every model in the store.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Inference API address.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="Inference API port (0: any free port; the ready line on stdout says which).")
@click.option("--management-host", default="127.0.0.1", show_default=True,
              help="Management API address; keep it on loopback unless a proxy guards it.")
@click.option("--management-port", default=8081, show_default=True, type=click.IntRange(0, 65535))
@click.option("--token-file", type=click.Path(dir_okay=False),
              help="Where to write the management token (mode 0600); default: a new temp file.")
@click.option("--no-auth", is_flag=True, help="Serve the management API without a token.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes per model without its own config.json.")
@click.option("--max-batch-size", default=1, show_default=True, type=click.IntRange(1, 65536),
              help="Default dynamic batch size in rows (1: no batching).")
@click.option("--max-queue-delay-us", default=5000, show_default=True, type=click.IntRange(0, 10_000_000),
              help="Default time a request may wait for others to batch with.")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, type=click.FloatRange(0.001, 86400),
              help="Default per-request timeout in seconds (504 after it).")
@click.option("--max-queue-size", default=100, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Default requests queued per model before 503.")
@click.option("--max-body-mb", default=32, show_default=True, type=click.IntRange(1, 4096),
              help="Largest request body in MiB (413 above it).")
@click.option("--max-buffered-mb", default=256, show_default=True, type=click.IntRange(1, 1 << 20),
              help="Request-body MiB the server holds at once, all requests together (503 above it).")
def serve(model_store, models, host, port, management_host, management_port, token_file, no_auth,
          workers, max_batch_size, max_queue_delay_us, timeout_s, max_queue_size, max_body_mb,
          max_buffered_mb):
    """Serve every model in --model-store (or --models) until SIGTERM/Ctrl-C.

    Inference API on --port: POST /predictions/NAME, GET /ping, KServe v2 under /v2.
    Management API on --management-port: /models, /metrics (Bearer token unless --no-auth).
    Per-model settings go in NAME/config.json (max_batch_size, max_queue_delay_us, workers,
    timeout_s, max_queue_size, handler).

    Example: modelkit serve --model-store models/ --max-batch-size 32
    """
    try:
        from modelkit.edge_runtime.serving.errors import ModelStoreError
        from modelkit.edge_runtime.serving.server import ServeOptions, run
        from modelkit.edge_runtime.serving.store import ModelConfig
    except ImportError as e:
        click.echo(f"error: modelkit serve needs the serve extra ({e.name} is missing)\n"
                   "hint: pip install 'modelkit[serve]'", err=True)
        sys.exit(2)
    options = ServeOptions(
        model_store=model_store, models=list(models) or None, host=host, port=port,
        management_host=management_host, management_port=management_port, token_file=token_file,
        auth=not no_auth, max_body_bytes=max_body_mb * 1024 * 1024,
        max_buffered_bytes=max_buffered_mb * 1024 * 1024,
        defaults=ModelConfig(max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
                             workers=workers, timeout_s=timeout_s, max_queue_size=max_queue_size))
    try:
        code = run(options)
    except (ModelStoreError, OSError) as e:
        click.echo(f"error: {e}\nhint: check --model-store and the ports", err=True)
        sys.exit(2)
    sys.exit(code)
