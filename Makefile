# DiffTeacher: `make install`, `make test`, `make demo`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.diffteacher-installed
REQS := requirements/torch.txt requirements/openmmlab.txt requirements/nodeps.txt \
        requirements/diffusion.txt requirements/tests.txt setup.cfg pyproject.toml

.PHONY: install install-full-mmcv test demo demo-correspondence demo-segmentation demo-dmd demo-itm clean-venv

install: $(STAMP)

# Idempotent: re-runs only when a requirements file changed. Several steps because mmpose/mmdet
# must be installed without their (broken) dependency pins, and xtcocotools from source (its
# wheel breaks on numpy 2).
$(STAMP): $(REQS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -r requirements/torch.txt
	$(PIP) install -r requirements/openmmlab.txt
	$(PIP) install --no-deps -r requirements/nodeps.txt
	$(PIP) install --no-deps --no-build-isolation --no-binary xtcocotools xtcocotools==1.14.3
	$(PIP) install -r requirements/diffusion.txt -r requirements/tests.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "DiffTeacher installed into $(VENV)"

# Optional: compile mmcv 2.1.0's CPU/CUDA ops from the sdist (about 27 min on 2 cores). Only
# needed for models that call mmcv.ops (none of the shipped configs do).
install-full-mmcv: $(STAMP)
	bash tools/install_full_mmcv.sh $(PY)

test: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)

# The main job: the RepFusion story on scikit-learn's digits (about 10-15 min on 2 CPU cores).
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) tools/demo_repfusion.py

# Correspondence on digits with exact ground truth (affine pairs): the demo's DDPM teacher vs
# pixels vs a random-init network vs that network distilled from the teacher (about 4.5 min;
# trains the teacher if absent).
demo-correspondence: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) tools/demo_correspondence.py

# Few-label segmentation on digits (ddpm-segmentation's pixel-MLP ensemble on the digits teacher's
# features vs raw pixels vs a random-init UNet) and a TopK SAE on the teacher's tokens with its
# latents against the masks (a few minutes; trains the teacher if absent).
demo-segmentation: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) tools/demo_segmentation.py

# One-step generation on digits: DMD distils the digits teacher (trained if absent) into a one-step
# generator; proxy Frechet distance in a digits classifier's features (not FID), recognised rate,
# images/s of teacher 35-evaluation Heun, teacher 1 step and the DMD generator.
demo-dmd: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) tools/demo_dmd.py

# Image-text matching on captioned digits: a tiny text-conditioned UNet trained here, DSD attention /
# Diffusion-ITM / their sum before and after LoRA prompt learning on 5% of the training images.
demo-itm: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) tools/demo_itm.py
