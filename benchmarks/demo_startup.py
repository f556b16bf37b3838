"""Time from `hf-stagegan demo` to the first image; optionally a screenshot of the demo in headless Chromium.

    python benchmarks/demo_startup.py                       # default 256 px pipeline, CLIP ViT-B/32-sized text tower
    python benchmarks/demo_startup.py --model ./stagegan-synthbirds --runs 3
    python benchmarks/demo_startup.py --model ./tiny --screenshot docs/demo.png --prompt "a red bird"

Each run starts `hf-stagegan demo --model M --port P --device cpu` as a fresh process (imports, loading the pipeline,
one warm-up generation, then the server), polls the page until it answers, then asks for the slider's default of
4 images through `gradio_client`, the API the page itself calls. Reported per run, from the command's start: when the
page answers, when the first images are back; and the first request's own time (client connection included). For
scale: the time a fresh process takes to import the demo (torch, transformers, diffusers, Gradio), and the machine's
load average (on a shared machine, compare runs made at the same load). Without `--model`, the random-weight pipeline
of `pipeline_latency.py` is saved to a temporary folder first.

The screenshot needs Chromium and chromedriver (`apt-get install chromium chromium-driver`) and selenium.
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from gradio_client import Client

PROMPT = "this bird has a red body and black wings"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_demo(model: str, port: int) -> tuple[subprocess.Popen, float]:
    script = Path(sys.executable).with_name("hf-stagegan")  # the console script of this environment
    command = [str(script)] if script.exists() else [sys.executable, "-m", "hf_stagegan.cli"]
    command += ["demo", "--model", model, "--port", str(port), "--device", "cpu"]
    start = time.perf_counter()
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), start


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            sys.exit(f"the demo exited with {process.returncode}:\n{process.stderr.read()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    sys.exit(f"{url} did not answer within {timeout} s")


def time_one_run(model: str, prompt: str) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    process, start = start_demo(model, port)
    try:
        wait_until_up(url, process)
        up = time.perf_counter()
        Client(url, verbose=False).predict(prompt, 4, 0, 0.0, api_name="/generate")
        done = time.perf_counter()
    finally:
        process.terminate()
        process.wait(timeout=30)
    return {"page answers": up - start, "first images": done - start, "first request": done - up}


def screenshot(model: str, prompt: str, path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    process, _ = start_demo(model, port)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("google-chrome")
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1280,1320",
    ):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        driver = webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")), options=options)
        try:
            wait_until_up(url, process)
            wait = WebDriverWait(driver, 120)
            driver.get(url)
            wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompt textarea")).send_keys(prompt)
            driver.find_element(By.CSS_SELECTOR, "#generate").click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) >= 4)
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#level-3 img"))
            time.sleep(1.0)  # let the last images decode and the progress animation end
            driver.save_screenshot(str(path))
        finally:
            driver.quit()
            process.terminate()
            process.wait(timeout=30)
    print(f"screenshot: {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hub id or folder (default: pipeline_latency.py's 256 px pipeline, saved)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--screenshot", type=Path, help="also save a screenshot of the demo here (PNG)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        model = args.model
        if model is None:
            from pipeline_latency import build_pipeline  # this folder is on sys.path when run as a script

            model = str(Path(folder) / "pipeline")
            build_pipeline().save_pretrained(model)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import hf_stagegan.demo"], check=True)
        print(f"importing hf_stagegan.demo in a fresh process: {time.perf_counter() - start:.1f} s")
        print("load average (1, 5, 15 min) before: " + ", ".join(f"{load:.1f}" for load in os.getloadavg()))
        runs = [time_one_run(model, args.prompt) for _ in range(args.runs)]
        print("load average (1, 5, 15 min) after: " + ", ".join(f"{load:.1f}" for load in os.getloadavg()))
        for index, run in enumerate(runs, start=1):
            print(f"run {index}: " + ", ".join(f"{key} {value:.1f} s" for key, value in run.items()))
        print(
            f"median of {len(runs)}: "
            + ", ".join(f"{key} {statistics.median(r[key] for r in runs):.1f} s" for key in runs[0])
        )
        if args.screenshot:
            screenshot(model, args.prompt, args.screenshot)


if __name__ == "__main__":
    main()
