#!/usr/bin/env bash
# Snakemake runs this once in the new conda environment of dmae.yaml: it installs the
# checkout's requirements.lock (every version and hash), then the checkout itself without
# dependencies. The checkout is DMAE_CHECKOUT, which the workflow sets to the one its code is
# read from (workflow/rules/common.smk); a deployed copy, whose code Snakemake reads from
# git, sets it to a clone at the deployed commit. Without it: the working directory.
set -euo pipefail

# The lock this environment is made of. Snakemake hashes this file into the environment's
# name, so a new lock makes a new environment; `make lock` writes it, a test checks it.
LOCK_SHA256=352693a8549be0ced0b3fedcb30716ff826d386fd768088928dbd720099e7d6e

checkout=${DMAE_CHECKOUT:-.}
lock=$checkout/requirements.lock
found=$(python -c 'import hashlib, sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$lock" 2>/dev/null || echo "no such file")
if [ "$found" != "$LOCK_SHA256" ]; then
  echo "dmae.post-deploy.sh: $lock is not the lock this environment is made of" \
    "(sha256: $found; expected $LOCK_SHA256): run from a checkout of the workflow's" \
    "commit, or set DMAE_CHECKOUT to one" >&2
  exit 1
fi
python -m pip install --require-hashes --no-deps -r "$lock"
python -m pip install --no-deps -e "$checkout"
