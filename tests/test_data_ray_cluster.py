"""The Ray engine on a two-node Ray cluster on this machine (a head and a worker node, one CPU each): the shard
jobs run on both nodes, which share the work folder as a cluster's nodes share a filesystem, and the outputs are
the local engine's bytes."""

from __future__ import annotations

import pytest

from llmrecipe.data import ray_engine
from tests.data_helpers import planted_corpus, run_step, spec_for
from tests.test_data_ray import digests

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra: pip install -e '.[ray]'")
cluster_utils = pytest.importorskip("ray.cluster_utils")


@pytest.fixture(scope="module")
def two_nodes():
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_two_nodes_write_the_local_engines_bytes(two_nodes, tmp_path, monkeypatch):
    files = planted_corpus(tmp_path / "src", docs=8_000, files=4)
    local = digests(run_step(tmp_path / "local", files, spec_for(tmp_path / "src", workers=2)))
    used: list = []
    close = ray_engine.RayWorkers.close
    monkeypatch.setattr(ray_engine.RayWorkers, "close", lambda self: (used.append(dict(self.nodes)), close(self)))
    out = run_step(tmp_path / "ray", files, spec_for(tmp_path / "src", engine="ray"))
    assert digests(out) == local
    nodes = {node for seen in used for node in seen}
    assert len(nodes) == 2, f"the shard jobs ran on {len(nodes)} node(s)"
