# Shared setup: validate the config (an unknown or wrong key stops here, before any job
# runs) and write the effective config that every `dmae` call reads.

import yaml

from dmae import config as dmae_config

dmae_config.validate(config, source="workflow config")

DATA = config["paths"]["data"]
RESULTS = f"{config['paths']['results']}/{config['name']}"
LOGS = f"{RESULTS}/logs"
DATASET = config["dataset"]["name"]
PREPARED_MANIFEST = f"{DATA}/prepared/{DATASET}/manifest.json"

# The CLI reads the same merged config snakemake sees (config files and --config overrides).
# Rewritten only when its content changes, so an unchanged config triggers nothing.
EFFECTIVE_CONFIG = f"{RESULTS}/config.yaml"
_effective = yaml.safe_dump(config, sort_keys=True)
if not os.path.exists(EFFECTIVE_CONFIG) or open(EFFECTIVE_CONFIG).read() != _effective:
    os.makedirs(RESULTS, exist_ok=True)
    with open(EFFECTIVE_CONFIG, "w") as fh:
        fh.write(_effective)
