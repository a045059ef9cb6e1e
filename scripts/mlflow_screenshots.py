"""Look at a run the way its users do: headless Chromium opens the MLflow UI pages of a run and saves screenshots.

    python scripts/mlflow_screenshots.py --tracking-uri http://127.0.0.1:5000 --run-id <id> --out shots/

Pages: the experiment's run table (model-training view), the run's overview (name, description, source,
dataset, registered model), its model metrics and system metrics charts, its images (the step slider), and
the registered model. Chromium comes from Debian (``apt-get install chromium``); it is driven over the DevTools
protocol and given real seconds to render (``--virtual-time-budget`` screenshots catch MLflow's spinners).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp
from mlflow.tracking import MlflowClient

VIEW = "workflowType=machine_learning"


def pages(uri: str, run_id: str) -> dict[str, str]:
    """name -> URL of each page to capture."""
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    exp = run.info.experiment_id
    base = f"{uri.rstrip('/')}/#/experiments/{exp}"
    out = {"runs": f"{base}?{VIEW}", "overview": f"{base}/runs/{run_id}?{VIEW}",
           "model_metrics": f"{base}/runs/{run_id}/model-metrics?{VIEW}",
           "system_metrics": f"{base}/runs/{run_id}/system-metrics?{VIEW}",
           "artifacts": f"{base}/runs/{run_id}/artifacts?{VIEW}"}
    registered = run.data.tags.get("registered_model", "")
    if registered.startswith("models:/"):
        name, version = registered.removeprefix("models:/").rsplit("/", 1)
        out["registered_model"] = f"{uri.rstrip('/')}/#/models/{name}/versions/{version}"
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def capture(urls: dict[str, str], out: Path, *, port: int, wait_s: float) -> list[Path]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
        target = next(t for t in json.load(r) if t["type"] == "page")
    saved = []
    async with aiohttp.ClientSession() as session, session.ws_connect(target["webSocketDebuggerUrl"],
                                                                      max_msg_size=0) as ws:
        ids = iter(range(1, 10_000))

        async def call(method: str, **params) -> dict:
            i = next(ids)
            await ws.send_json({"id": i, "method": method, "params": params})
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("id") == i:
                    return data.get("result", {})
            raise RuntimeError("DevTools connection closed")

        await call("Emulation.setDeviceMetricsOverride", width=1600, height=1000, deviceScaleFactor=1, mobile=False)
        for name, url in urls.items():
            await call("Page.navigate", url=url)
            await asyncio.sleep(wait_s)  # real time: the UI fetches, then draws its charts
            shot = await call("Page.captureScreenshot", format="png")
            path = out / f"{name}.png"
            path.write_bytes(base64.b64decode(shot["data"]))
            saved.append(path)
    return saved


def screenshots(uri: str, run_id: str, out: Path, *, wait_s: float = 8.0) -> list[Path]:
    """Save one PNG per page of ``pages`` under ``out``; returns their paths."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("mlflow_screenshots: needs Chromium (apt-get install chromium)")
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ebm-chromium-") as profile:
        proc = subprocess.Popen([browser, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                                 f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
                                 "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.3)
            return asyncio.run(capture(pages(uri, run_id), out, port=port, wait_s=wait_s))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracking-uri", required=True, help="the MLflow server, e.g. http://127.0.0.1:5000")
    p.add_argument("--run-id", required=True)
    p.add_argument("--out", default="runs/screenshots", help="directory for the PNGs")
    p.add_argument("--wait", type=float, default=8.0, help="seconds each page gets to render")
    args = p.parse_args()
    for path in screenshots(args.tracking_uri, args.run_id, Path(args.out), wait_s=args.wait):
        print(path)


if __name__ == "__main__":
    main()
