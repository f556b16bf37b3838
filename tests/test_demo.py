"""`hf-stagegan demo` on a tiny pipeline: the app served on localhost and driven through `gradio_client` (Gradio's
official client), in a real headless Chromium, and as the console command; `export-space` and the Space it writes."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import SpaceCard

from hf_stagegan import StageGANPipeline
from hf_stagegan.cli import main
from hf_stagegan.encoders import build_clip_from_scratch, train_clip_tokenizer
from hf_stagegan.hub import write_model_card

from .conftest import TINY_TEXT_DIM, TOY_CAPTIONS
from .test_hub import REPO_ID, files_of, put_in_cache
from .test_pipeline import LONG, SHORT, make_pipeline, seeded

gr = pytest.importorskip("gradio", reason="the demo tests need Gradio: pip install 'hf-stagegan[demo]'")
gradio_client = pytest.importorskip("gradio_client")
demo_app = pytest.importorskip("hf_stagegan.demo")

EXAMPLES = ["a red bird", "a small blue bird"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def demo_pipe():
    tokenizer = train_clip_tokenizer(TOY_CAPTIONS * 5, vocab_size=300, model_max_length=16)
    torch.manual_seed(0)
    clip = build_clip_from_scratch(
        tokenizer,
        projection_dim=TINY_TEXT_DIM,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    ).eval()
    return make_pipeline(tokenizer, clip)


@pytest.fixture(scope="module")
def server(demo_pipe):
    """The demo of the tiny pipeline, served on a free localhost port for this module."""
    app = demo_app.build_demo(demo_pipe, examples=EXAMPLES, max_images=4, model_name=REPO_ID)
    app.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    yield app.local_url
    app.close()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server, verbose=False, download_files=True)


def png(path) -> np.ndarray:
    return np.asarray(PIL.Image.open(path).convert("RGB"))


# ---------------------------------------------------------------------------------------------------------------------
# the app through gradio_client


def test_client_gets_the_pipeline_images_and_levels(client, demo_pipe):
    gallery, level1, level2, level3 = client.predict(SHORT, 3, 5, 0.0, api_name="/generate")
    # image j from seed 5 + j, as `hf-stagegan generate --seed 5` draws them
    expected = demo_pipe(SHORT, num_images_per_prompt=3, generator=seeded(5, 6, 7), return_all_levels=True)
    assert [item["caption"] for item in gallery] == ["seed 5", "seed 6", "seed 7"]
    for item, image in zip(gallery, expected.images):
        np.testing.assert_array_equal(png(item["image"]), np.asarray(image))  # PNG: lossless
    # the first image's three levels, each enlarged with nearest-neighbour to the display size
    side = demo_app.LEVEL_DISPLAY_SIDE
    for path, level in zip((level1, level2, level3), expected.level_images):
        np.testing.assert_array_equal(png(path), np.asarray(level[0].resize((side, side), PIL.Image.NEAREST)))
    assert not np.array_equal(png(level1), png(level3))


def test_client_truncation_is_the_pipeline_truncation(client, demo_pipe):
    gallery, *_ = client.predict(SHORT, 1, 0, 0.5, api_name="/generate")
    expected = demo_pipe(SHORT, generator=seeded(0), truncation_threshold=0.5).images[0]
    np.testing.assert_array_equal(png(gallery[0]["image"]), np.asarray(expected))


@pytest.mark.parametrize("prompt", ["", "   "])
def test_client_sees_the_pipeline_refusal(client, demo_pipe, prompt):
    with pytest.raises(ValueError) as pipeline_error:
        demo_pipe(prompt)
    with pytest.raises(gradio_client.exceptions.AppError) as demo_error:
        client.predict(prompt, 2, 0, 0.0, api_name="/generate")
    assert (
        str(demo_error.value) == str(pipeline_error.value) == f"`prompt` must be a non-empty string, got {prompt!r}."
    )


def test_client_cannot_ask_for_more_images_than_the_demo_allows(client):
    with pytest.raises(gradio_client.exceptions.AppError, match="Value 9 is greater than maximum value 4"):
        client.predict(SHORT, 9, 0, 0.0, api_name="/generate")


@pytest.mark.parametrize(
    "num_images, truncation, message",
    [
        (0, 0.0, "`num_images_per_prompt` must be >= 1, got 0."),
        (2.5, 0.0, "`num_images_per_prompt` has to be an int, got float: 2.5."),
        (5, 0.0, "`num_images_per_prompt` must be <= 4 in this demo, got 5."),
        (1, -1.0, "`truncation_threshold` must be a finite number > 0, got -1.0."),
    ],
)
def test_generate_refuses_with_the_pipeline_message(demo_pipe, num_images, truncation, message):
    with pytest.raises(gr.Error) as error:
        demo_app.generate(demo_pipe, SHORT, num_images, 0, truncation, max_images=4)
    assert error.value.message == message


def test_app_shows_the_example_prompts_and_the_model(demo_pipe):
    app = demo_app.build_demo(demo_pipe, examples=EXAMPLES, model_name=REPO_ID)
    config = json.dumps(app.get_config_file(), default=repr)
    assert all(example in config for example in EXAMPLES)
    assert f"https://huggingface.co/{REPO_ID}" in config and "Level 1 \\u00b7 16 px" in config
    with pytest.raises(
        ValueError, match=r"needs a tokenizer, text encoder and generator; it has no \['text_encoder'\]"
    ):
        demo_app.build_demo(StageGANPipeline(demo_pipe.tokenizer, None, demo_pipe.image_generator))


def test_example_prompts_come_from_the_model_card(pipe, saved, tmp_path, monkeypatch):
    assert demo_app.example_prompts(saved) == demo_app.DEFAULT_EXAMPLES  # no card
    write_model_card(saved, pipeline=pipe, repo_id=REPO_ID, sample_prompts=[SHORT, LONG])
    assert demo_app.example_prompts(saved) == [SHORT, LONG]
    # a Hub id: the card is read from the HF cache offline; missing there, the defaults
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    put_in_cache(tmp_path / "hub", REPO_ID, files_of(saved), tree_listing=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert demo_app.example_prompts(REPO_ID) == [SHORT, LONG]
    assert demo_app.example_prompts("org/not-in-the-cache") == demo_app.DEFAULT_EXAMPLES


# ---------------------------------------------------------------------------------------------------------------------
# a real browser


def chromium_paths():
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    return browser, driver


def test_browser_types_a_prompt_clicks_generate_and_sees_images(server, tmp_path, monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (hf-stagegan[test])")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = chromium_paths()
    if not (browser and driver_path):
        pytest.skip(
            "Chromium and chromedriver are not installed (apt-get install chromium chromium-driver; .ci/run does)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager: never download a driver
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(server)
        prompt = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompt textarea"))
        prompt.send_keys(SHORT)
        driver.find_element(By.CSS_SELECTOR, "#generate").click()

        def decoded_gallery_images(d):
            images = d.find_elements(By.CSS_SELECTOR, "#gallery img")
            loaded = [image for image in images if d.execute_script("return arguments[0].naturalWidth", image) == 64]
            return loaded if len(loaded) >= 4 else False  # the slider's default: 4 images of 64 px

        images = wait.until(decoded_gallery_images)
        assert images[0].is_displayed()
        level3 = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#level-3 img"))
        assert driver.execute_script("return arguments[0].naturalWidth", level3) == demo_app.LEVEL_DISPLAY_SIDE
        driver.save_screenshot(str(tmp_path / "demo.png"))
        assert PIL.Image.open(tmp_path / "demo.png").size[0] > 0

        # the pipeline's refusal, shown in the page
        prompt.clear()
        prompt.send_keys("   ")
        driver.find_element(By.CSS_SELECTOR, "#generate").click()
        message = "`prompt` must be a non-empty string"
        wait.until(lambda d: message in d.find_element(By.TAG_NAME, "body").text)
    finally:
        driver.quit()


# ---------------------------------------------------------------------------------------------------------------------
# the console command and the Space


def wait_for(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {process.stderr.read()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.25)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def serve(command: list[str], env: dict, url: str, cwd=None):
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(url, process)
        client = gradio_client.Client(url, verbose=False)
        return client.predict(SHORT, 1, 3, 0.0, api_name="/generate")
    finally:
        process.terminate()
        process.wait(timeout=30)


def assert_is_the_saved_pipeline_image(pixels: np.ndarray, folder):
    """`pixels` is image 0 of `SHORT` at seed 3 (what `serve` asks for) from the pipeline saved in `folder`."""
    expected = StageGANPipeline.from_pretrained(folder)(SHORT, generator=seeded(3)).images[0]
    np.testing.assert_array_equal(pixels, np.asarray(expected))


def offline_env(home) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_", "GRADIO_"))}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    return env


@pytest.mark.slow
def test_console_demo_serves_a_hub_model_from_the_offline_cache(pipe, saved, tmp_path):
    write_model_card(saved, pipeline=pipe, repo_id=REPO_ID, sample_prompts=EXAMPLES)
    put_in_cache(tmp_path / "home" / "hub", REPO_ID, files_of(saved), tree_listing=True)
    port = free_port()
    command = [sys.executable, "-m", "hf_stagegan.demo", "--model", REPO_ID, "--port", str(port), "--device", "cpu"]
    gallery, *_ = serve(command, offline_env(tmp_path / "home"), f"http://127.0.0.1:{port}/")
    assert_is_the_saved_pipeline_image(png(gallery[0]["image"]), saved)


def test_console_demo_refuses_before_serving(saved, tmp_path, capsys):
    (saved / "image_generator" / "model.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--model", str(saved), "--port", str(free_port())])
    assert exit_info.value.code == 1 and "is not a complete safetensors file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--model", str(saved), "--max-images", "0"])
    assert exit_info.value.code == 2 and "--max-images must be >= 1, got 0" in capsys.readouterr().err


def test_export_space_writes_a_gradio_space_linked_to_the_model(tmp_path, capsys):
    space = tmp_path / "space"
    assert main(["export-space", "--model", REPO_ID, "--output_dir", str(space)]) == 0
    written = capsys.readouterr().out.split()
    assert written == [str(space / name) for name in ("app.py", "requirements.txt", "README.md")]
    card = SpaceCard.load(space / "README.md").data
    assert (card.sdk, card.sdk_version, card.app_file, card.models) == ("gradio", gr.__version__, "app.py", [REPO_ID])
    import hf_stagegan

    assert f"hf-stagegan[demo]=={hf_stagegan.__version__}" in (space / "requirements.txt").read_text().splitlines()
    compile((space / "app.py").read_text(), "app.py", "exec")

    # nothing the user has is replaced without --overwrite
    (space / "app.py").write_text("mine")
    with pytest.raises(SystemExit):
        main(["export-space", "--model", REPO_ID, "--output_dir", str(space)])
    assert "already has ['app.py', 'requirements.txt', 'README.md']" in capsys.readouterr().err
    assert (space / "app.py").read_text() == "mine"
    main(
        [
            "export-space",
            "--model",
            REPO_ID,
            "--output_dir",
            str(space),
            "--overwrite",
            "--requirement",
            "git+https://x/y",
        ]
    )
    assert "git+https://x/y" in (space / "requirements.txt").read_text()


@pytest.mark.parametrize("model", ["./local-folder", "a/b/c"])
def test_export_space_needs_a_hub_id(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local-folder").mkdir()
    with pytest.raises(SystemExit):
        main(["export-space", "--model", model, "--output_dir", "space"])
    assert "`model_id` must be a Hub repo id" in capsys.readouterr().err and not (tmp_path / "space").exists()


@pytest.mark.slow
def test_the_exported_space_runs_the_demo(saved, tmp_path):
    # what the Space does after installing requirements.txt: `python app.py`, host and port from the environment
    put_in_cache(tmp_path / "home" / "hub", REPO_ID, files_of(saved), tree_listing=True)
    space = tmp_path / "space"
    main(["export-space", "--model", REPO_ID, "--output_dir", str(space)])
    port = free_port()
    env = offline_env(tmp_path / "home")
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    gallery, *_ = serve([sys.executable, "app.py"], env, f"http://127.0.0.1:{port}/", cwd=space)
    assert_is_the_saved_pipeline_image(png(gallery[0]["image"]), saved)
