"""``python -m shop``: serve the shop on 127.0.0.1 (settings from the environment).

SHOP_INSTITUTION_URL   the institution (https://..., or http://127.0.0.1:... for a test)
SHOP_API_KEY           the merchant's secret API key (sk_live_...)
SHOP_WEBHOOK_SECRET    the webhook endpoint's Standard Webhooks secret (whsec_...)
SHOP_INSTITUTION_CA    optional: the institution's CA file (a private CA)
SHOP_DB                where the shop keeps its orders (default ./shop.db)
SHOP_PORT              the port (0: any free one); prints "READY <url>" once listening
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import uvicorn

from shop.app import Config, create_app


def main() -> None:
    """Listen on 127.0.0.1 and serve until stopped."""
    env = os.environ
    missing = [
        n for n in ("SHOP_INSTITUTION_URL", "SHOP_API_KEY", "SHOP_WEBHOOK_SECRET") if not env.get(n)
    ]
    if missing:
        sys.exit(f"shop: set {', '.join(missing)} (see python -m shop --help)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(env.get("SHOP_PORT", "0"))))
    # listening before READY is printed: uvicorn calls listen() only inside serve(), and a
    # client that connected between READY and then was refused (ECONNREFUSED)
    sock.listen(2048)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = Config(
        institution=env["SHOP_INSTITUTION_URL"],
        api_key=env["SHOP_API_KEY"],
        webhook_secret=env["SHOP_WEBHOOK_SECRET"],
        public_url=url,
        db=Path(env.get("SHOP_DB", "shop.db")),
        ca=Path(env["SHOP_INSTITUTION_CA"]) if env.get("SHOP_INSTITUTION_CA") else None,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), log_level="warning", access_log=False)
    )
    print(f"READY {url}", flush=True)
    asyncio.run(server.serve(sockets=[sock]))


if __name__ == "__main__":
    if "--help" in sys.argv[1:]:
        print(__doc__)
    else:
        main()
