"""The synthetic demo data: scenes and the experiment config that runs on them."""

import tomllib

from refiner.recipes.demo import write_demo_data


def test_demo_data_and_its_config_are_written_whole(tmp_path):
    paths = write_demo_data(tmp_path, size=64, coarse_steps=7, rnn_steps=5)
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {p.name for p in paths.values()} and "demo.toml" in names  # no temporaries left
    config = tomllib.loads(paths["config"].read_text())
    assert config["coarse"]["steps"] == 7 and config["enhance"]["steps"] == 5
