"""Bad input, table-driven: through the app's API (gradio_client) and through the `shapeinv` command.

Each case must get one message that names the problem and the fix: no traceback, no server path,
no library internals, and (for the app) the server keeps answering afterwards. Every case is
refused before any work is queued: the queue is checked to be unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from safetensors.torch import save_file

from shapeinv_core.cli import main
from shapeinv_core.jobs import new_owner_token
from tests.conftest import OWNER, SMALL, example_image, job_status
from tests.helpers import chair_like, tiny_folder

STRANGER = new_owner_token()
INTERNALS = re.compile(r"Traceback|preprocess|component at index|pydantic|File \"|/tmp|gradio_api|site-packages|"
                       r"Internal error|object has no attribute|NoneType")


# --- files the cases send ----------------------------------------------------------------------

def concept_files(folder: Path) -> dict[str, Path]:
    """Broken `learned_embeds.safetensors` files, each wrong in one way."""
    folder.mkdir(exist_ok=True)
    tensors = {
        "three_d": {"*s": torch.zeros(2, 2, 32)},
        "no_vectors": {"*s": torch.zeros(0, 32)},
        "too_many": {"*s": torch.zeros(3000, 32)},  # 384 kB: under the upload limit, far over 16 vectors
        "nan_vectors": {"*s": torch.full((1, 32), float("nan"))},
        "two": {"*s": torch.zeros(1, 32), "*t": torch.zeros(1, 32)},
        "integers": {"*s": torch.zeros(1, 32, dtype=torch.int64)},
        "wrong_dim": {"*s": torch.zeros(1, 768)},
        "huge_vectors": {"*s": torch.full((1, 32), 1e30)},  # finite, but a black image
    }
    files = {}
    for name, content in tensors.items():
        files[name] = folder / f"{name}.safetensors"
        save_file(content, str(files[name]))
    files["text_file"] = folder / "text.safetensors"
    files["text_file"].write_text("not a tensor file")
    files["not_image"] = folder / "notes.png"
    files["not_image"].write_text("this is text, not a picture")
    files["huge"] = folder / "huge.png"
    Image.new("RGB", (2000, 1500), "white").save(files["huge"])  # 3 MP; the test app allows 2 MP
    files["empty_mask"] = folder / "empty_mask.png"
    Image.new("L", (96, 96), 0).save(files["empty_mask"])
    files["speck_mask"] = folder / "speck_mask.png"  # one white pixel in 512x512, the example photo's size
    speck = Image.new("L", (512, 512), 0)
    speck.putpixel((300, 200), 255)
    speck.save(files["speck_mask"])
    return files


# --- the API -----------------------------------------------------------------------------------

def start(**changes) -> tuple[str, dict]:
    return "/start_inversion", {**SMALL, "image": "EXAMPLE", "mask": None, "owner": OWNER, **changes}


def sweep(**changes) -> tuple[str, dict]:
    values = {key: value for key, value in SMALL.items() if key != "mask_weight"}
    return "/start_sweep", {**values, "image": "EXAMPLE", "mask": None, "weights": "0, 0.3",
                            "prompts": "a red chair in the shape of *s", "num_images": 1, "sample_steps": 2,
                            "guidance": 7.5, "owner": OWNER, **changes}


def edit(**changes) -> tuple[str, dict]:
    return "/generate", {"job_id": "FINISHED", "concept_file": None, "prompts": "a red chair in the shape of *s",
                         "num_images": 1, "seed": 0, "steps": 2, "guidance": 7.5, "owner": OWNER, **changes}


API_CASES = {
    # the inversion form: numbers out of range, not numbers, huge
    "steps 0": (start(steps=0), r"Steps"),
    "steps over the limit": (start(steps=5000), r"5000 steps.* is more than this server allows"),
    "the LoRA phase takes steps over the limit": (start(steps=2950, tune="lora", lora_steps=100),
                                                  r"3050 steps \(LoRA phase included\) is more than this server"),
    "a sweep's LoRA phase over the limit": (sweep(steps=2950, tune="lora", lora_steps=100),
                                            r"3050 steps \(LoRA phase included\) is more than this server"),
    "steps not a number": (start(steps="many"), r"Steps"),
    "steps missing": (start(steps=None), r"Steps is missing; give a number"),
    "steps 2.5": (start(steps=2.5), r"Steps must be a whole number, not 2.5"),
    "mask weight above 1": (start(mask_weight=1.5), r"mask.weight"),
    "mask weight below 0": (start(mask_weight=-0.1), r"mask.weight"),
    "mask weight nan": (start(mask_weight="nan"), r"mask.weight"),
    "seed 2**63": (start(seed=2**63), r"seed must be between 0 and 4294967295"),
    "seed negative": (start(seed=-1), r"Seed"),
    "seed 1e400": (start(seed="1e400"), r"Seed"),
    "learning rate 0": (start(learning_rate=0), r"learning_rate must be in \(0, 1\]"),
    "learning rate 5": (start(learning_rate=5), r"learning_rate must be in \(0, 1\]"),
    "learning rate inf": (start(learning_rate="inf"), r"Learning rate"),
    "17 vectors": (start(num_vectors=17), r"Vectors per \*s"),
    "0 vectors": (start(num_vectors=0), r"Vectors per \*s"),
    "batch 65": (start(batch_size=65), r"Timesteps per step"),
    "resolution 100": (start(resolution=100), r"resolution must be a multiple of 64"),
    "resolution 4096": (start(resolution=4096), r"resolution"),
    "map grid 12": (start(map_resolution=12), r"8, 16, 32,? (or )?64"),
    "attention layers bogus": (start(attention_layers="sideways"), r"all, down, mid,? (or )?up"),
    "map norm bogus": (start(map_norm="L2"), r"map.norm"),
    "init reg negative": (start(init_reg=-1), r"(Pull toward the initializer|init_reg)"),
    "checkpoint every 0": (start(checkpoint_every=0), r"checkpoint.every"),
    "class word 200 chars": (start(class_word="x" * 200), r"class_word must be at most 100 characters"),
    "initializer empty": (start(initializer=" "), r"initializer must be a word"),
    "name is the class word": (start(name="chair"), r"file name 'chair' is the class word or the initializer"),
    # what the served model's configs rule out, refused before queueing (the tiny model's grids: 8 and 4 at 64 px)
    "attention res 64 at 64 px": (start(resolution=64, attention_res="64"), r"attention_res 64: this model has no"),
    "attention res 16 on this model": (start(attention_res="16"), r"its layers have 4, 8"),
    "lora rank over the model's": (start(tune="lora", lora_rank=64, lora_steps=2), r"lora_rank 64 .*at most 32"),
    "sweep attention res 16": (sweep(attention_res="16"), r"attention_res 16: this model has no"),
    # images and masks
    "no image": (start(image=None), r"No image yet"),
    "image is text": (start(image="not_image"), r"not an image this app can read"),
    "image too many pixels": (start(image="huge"), r"megapixels"),
    "image a server path": (start(image={"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}),
                            r"(uploaded|Photo)"),
    "mask is text": (start(mask="not_image"), r"Mask"),
    "mask empty": (start(mask="empty_mask"), r"The mask is empty"),
    "mask a speck": (start(mask="speck_mask"), r"The mask's object is a speck \(1 pixel,"),
    "owner malformed": (start(owner="short"), r"owner token is missing or malformed"),
    "owner traversal": (start(owner="../../etc/passwd/../../.."), r"owner token is missing or malformed"),
    # job ids and owners
    "status traversal id": (("/job_status", {"job_id": "../../etc", "owner": OWNER}), r"not a job id"),
    "status missing job": (("/job_status", {"job_id": "0" * 32, "owner": OWNER}), r"There is no job"),
    "status of another's job": (("/job_status", {"job_id": "FINISHED", "owner": STRANGER}), r"There is no job"),
    "status without owner": (("/job_status", {"job_id": "FINISHED", "owner": None}), r"There is no job"),
    "status 10k-char id": (("/job_status", {"job_id": "a" * 10_000, "owner": OWNER}), r"not a job id"),
    "status empty id": (("/job_status", {"job_id": "", "owner": OWNER}), r"No job id given"),
    "status blank id": (("/job_status", {"job_id": "   ", "owner": OWNER}), r"No job id given"),
    "status None id": (("/job_status", {"job_id": None, "owner": OWNER}), r"No job id given"),
    "sweep results empty id": (("/sweep_results", {"job_id": "", "owner": OWNER}), r"No sweep id given"),
    "sweep results None id": (("/sweep_results", {"job_id": None, "owner": OWNER}), r"No sweep id given"),
    "zip with no run shown": (("/run_zip", {"job_id": "", "owner": OWNER}), r"No run is shown to zip"),
    "cancel another's job": (("/cancel_job", {"job_id": "FINISHED", "owner": STRANGER}), r"There is no job"),
    "cancel empty id": (("/cancel_job", {"job_id": "", "owner": OWNER}), r"not a job id"),
    "sweep results of a single run": (("/sweep_results", {"job_id": "FINISHED", "owner": OWNER}),
                                      r"is a single run, not a sweep"),
    "sweep results traversal": (("/sweep_results", {"job_id": "a/../b", "owner": OWNER}), r"not a job id"),
    # any session of the owner may name a sweep's concept (issue 11): the handler checks what it names
    "use concept empty": (("/use_sweep_concept", {"concept": "", "owner": OWNER}), r"Pick a weight first"),
    "use concept of a single run": (("/use_sweep_concept", {"concept": "FINISHED/weight_0.1", "owner": OWNER}),
                                    r"is a single run; use its id alone"),
    # edits
    "edit without a concept": (edit(job_id=""), r"No concept yet"),
    "edit another's concept": (edit(owner=STRANGER), r"There is no job"),
    "edit traversal id": (edit(job_id="../../../etc/passwd"), r"not a job id"),
    "edit no prompt": (edit(prompts=""), r"No prompt given"),
    "edit prompt without *s": (edit(prompts="a red chair"), r"does not use the learned word"),
    "edit too many images": (edit(prompts="\n".join(["a *s"] * 9)), r"at most 4 per request"),
    "edit prompt 600 chars": (edit(prompts="a *s " + "x" * 600), r"longer than this server takes"),
    "edit 0 images": (edit(num_images=0), r"Images per prompt"),
    "edit 500 steps": (edit(steps=500), r"Sampling steps"),
    "edit guidance -1": (edit(guidance=-1), r"guidance"),
    "edit seed 2**40": (edit(seed=2**40), r"seed must be between 0 and 4294967295"),
    "concept 3-D": (edit(job_id="", concept_file="three_d"), r"shape \[2, 2, 32\]"),
    "concept 0 vectors": (edit(job_id="", concept_file="no_vectors"), r"shape \[0, 32\]"),
    "concept 3000 vectors": (edit(job_id="", concept_file="too_many"), r"holds 3000 vectors; .* 1 to 16"),
    "concept NaN": (edit(job_id="", concept_file="nan_vectors"), r"NaN or infinite"),
    "concept two tensors": (edit(job_id="", concept_file="two"), r"holds 2 tensors"),
    "concept integers": (edit(job_id="", concept_file="integers"), r"floating-point"),
    "concept wrong width": (edit(job_id="", concept_file="wrong_dim"), r"768-dimensional vectors"),
    "concept huge values": (edit(job_id="", concept_file="huge_vectors"), r"over 100 times the longest word"),
    "concept not safetensors": (edit(job_id="", concept_file="text_file"), r"not a readable safetensors file"),
    # sweeps
    "sweep weights not numbers": (sweep(weights="0, abc"), r"Mask weights are numbers"),
    "sweep no weights": (sweep(weights=""), r"No mask weights given"),
    "sweep weights repeat": (sweep(weights="0, 0"), r"distinct"),
    "sweep weight 2": (sweep(weights="0, 2"), r"outside 0-1"),
    "sweep weight nan": (sweep(weights="nan"), r"(outside 0-1|finite)"),
    "sweep 9 weights": (sweep(weights="0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8"), r"more than this server learns"),
    "sweep no prompt": (sweep(prompts=""), r"No prompt given"),
    "sweep 0 sampling steps": (sweep(sample_steps=0), r"Sampling steps"),
    "sweep too many images": (sweep(weights="0 0.1 0.2 0.3 0.4 0.5 0.6 0.7",
                                    prompts="\n".join(["a *s"] * 4), num_images=2), r"draws at most 48"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return concept_files(tmp_path_factory.mktemp("bad-files"))


def resolve(value, files: dict, finished_job: str, image: Path):
    """Placeholders in a case's values -> real uploads and ids."""
    if value == "EXAMPLE":
        return handle_file(str(image))
    if isinstance(value, str) and value in files:
        return handle_file(str(files[value]))
    if isinstance(value, str) and value.startswith("FINISHED"):
        return finished_job + value.removeprefix("FINISHED")
    return value


def test_there_are_enough_api_cases():
    assert len(API_CASES) >= 40


@pytest.mark.parametrize("case", list(API_CASES))
def test_bad_api_input_gets_one_plain_message_and_nothing_is_queued(case, app_server, finished_job, files, tmp_path):
    (api_name, values), expected = API_CASES[case]
    client = Client(app_server.url, verbose=False, download_files=str(tmp_path))
    image = example_image(tmp_path)
    sent = {key: resolve(value, files, finished_job, image) for key, value in values.items()}
    jobs_before = len(app_server.backend.store.list())
    with pytest.raises(AppError) as refused:
        client.predict(api_name=api_name, **sent)
    message = str(refused.value)
    assert re.search(expected, message, re.DOTALL | re.IGNORECASE), message
    assert not INTERNALS.search(message), f"internals or a server path in: {message}"
    assert str(app_server.data) not in message and "\n" not in message.strip(), message
    assert len(app_server.backend.store.list()) == jobs_before, "nothing was queued"
    assert job_status(client, finished_job)["status"] == "done", "the app keeps serving"


# --- the CLI -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    files = concept_files(folder / "concepts")
    image, mask = chair_like((64, 64))
    image.save(folder / "chair.png")
    mask.save(folder / "mask.png")
    speck = Image.new("L", (64, 64), 0)
    speck.putpixel((30, 30), 255)
    speck.save(folder / "speck64.png")
    (folder / "a_file").write_text("x")
    (folder / "a_folder.png").mkdir()
    good = folder / "good"
    good.mkdir()
    save_file({"*s": torch.zeros(1, 32)}, str(good / "learned_embeds.safetensors"))
    return {**files, "folder": folder, "image": folder / "chair.png", "mask": folder / "mask.png", "good": good,
            "speck64": folder / "speck64.png"}


def invert(*extra: str) -> list[str]:
    return ["invert", "{image}", "-o", "{folder}/run", "--model", str(tiny_folder()), "--device", "cpu",
            "--resolution", "64", "--steps", "2", "--batch", "1", *extra]


def sweep_cli(*extra: str) -> list[str]:
    return ["sweep", "{image}", "--mask", "{mask}", "-o", "{folder}/sweep", "--model", str(tiny_folder()),
            "--device", "cpu", "--resolution", "64", "--steps", "2", "--batch", "1", "--clip-model", "none", *extra]


def generate_cli(concept: str = "{good}", *extra: str) -> list[str]:
    return ["generate", concept, "a red chair in the shape of *s", "-o", "{folder}/images", "--model",
            str(tiny_folder()), "--device", "cpu", *extra]


CLI_CASES = {
    "image missing": (invert()[:1] + ["{folder}/nope.png"] + invert()[2:], r"Image not found"),
    "image is text": (invert()[:1] + ["{not_image}"] + invert()[2:], r"not an image Pillow can read"),
    "mask missing": (invert("--mask", "{folder}/nope.png"), r"Image not found"),
    "mask empty": (invert("--mask", "{empty_mask}"), r"The mask is empty"),
    "mask a speck": (invert("--mask", "{speck64}"), r"The mask's object is a speck"),
    "-o is a file": (invert()[:3] + ["{folder}/a_file"] + invert()[4:], r"is a file; give a folder"),
    "-o inside a file": (invert()[:3] + ["{folder}/a_file/run"] + invert()[4:], r"Cannot create the folder"),
    "seed 2**63": (invert("--seed", str(2**63)), r"seed must be between 0 and 4294967295"),
    "seed negative": (invert("--seed", "-1"), r"seed must be between"),
    "template bogus field": (invert("--template", "a {bogus} {token}"), r"template must contain '\{token\}'"),
    "template without token": (invert("--template", "a chair"), r"template must contain"),
    "mask weight 2": (invert("--mask-weight", "2"), r"mask_weight must be between 0"),
    "mask weight nan": (invert("--mask-weight", "nan"), r"mask_weight must be a finite number"),
    "learning rate 0": (invert("--lr", "0"), r"learning_rate must be in"),
    "steps 0": (invert("--steps", "0"), r"steps must be between 1"),
    "resolution 100": (invert("--resolution", "100"), r"resolution must be a multiple of 64"),
    "17 vectors": (invert("--num-vectors", "17"), r"num_vectors must be between 1 and 16"),
    "map grid 12": (invert("--map-resolution", "12"), r"map_resolution must be 8, 16, 32 or 64"),
    "init reg inf": (invert("--init-reg", "inf"), r"init_reg must be a finite number"),
    "placeholder two words": (invert("--placeholder", "two words"), r"placeholder must be one word"),
    "sweep seeds -1": (sweep_cli("--seeds", "-1"), r"seed must be between"),
    "sweep weights repeat": (sweep_cli("--weights", "0,0"), r"weights repeat"),
    "sweep weight 1.5": (sweep_cli("--weights", "0,1.5"), r"mask_weight must be between"),
    "sweep prompt without *s": (sweep_cli("--prompts", "a red chair"), r"does not use the learned word"),
    "sweep rows per pass 0": (sweep_cli("--rows-per-pass", "0"), r"--rows-per-pass must be 1 or more"),
    "concept 3-D": (generate_cli("{three_d}"), r"shape \[2, 2, 32\]"),
    "concept 0 vectors": (generate_cli("{no_vectors}"), r"shape \[0, 32\]"),
    "concept NaN": (generate_cli("{nan_vectors}"), r"NaN or infinite"),
    "concept not safetensors": (generate_cli("{text_file}"), r"not a readable safetensors file"),
    "concept folder missing": (generate_cli("{folder}/nowhere"), r"No learned concept"),
    "generate prompt 600 chars": (generate_cli("{good}")[:2] + ["a red chair in the shape of *s " + "x" * 600]
                                  + generate_cli("{good}")[3:], r"A prompt of 631 characters is longer than 500"),
    "sweep prompt 600 chars": (sweep_cli("--prompts", "a *s " + "x" * 600), r"longer than 500"),
    "generate seed 2**63": (generate_cli("{good}", "--seed", str(2**63)), r"seed must be between"),
    "generate guidance 50": (generate_cli("{good}", "--guidance", "50"), r"guidance must be between 0 and 30"),
    "generate height 100": (generate_cli("{good}", "--height", "100"), r"height must be a multiple of 8"),
    "generate -o is a file": (generate_cli("{good}")[:3] + ["-o", "{folder}/a_file"] + generate_cli("{good}")[5:],
                              r"is a file; give a folder"),
    "mask -o not an image name": (["mask", "{image}", "-o", "{folder}/mask.txt"], r"must end in \.png"),
    "mask -o a folder": (["mask", "{image}", "-o", "{folder}/a_folder.png"], r"must end in|is a folder"),
}


def test_there_are_enough_cli_cases():
    assert len(CLI_CASES) >= 20


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_cli_input_gets_one_line_and_exit_code_2(case, cli_files, capsys):
    args, expected = CLI_CASES[case]
    names = {key: str(value) for key, value in cli_files.items()}
    code = main([re.sub(r"\{(\w+)\}", lambda match: names.get(match[1], match[0]), arg) for arg in args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(expected, lines[0]), lines[0]
    assert "Traceback" not in out + err
    assert not list(cli_files["folder"].rglob("step_*.safetensors")), "refused before any learning"
