"""TreeHop: the hop network's math and I/O, the pruning rules, the retriever contract over the
shipped trained weights, the hop tree, errors, and both framework adapters."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from latentrag import EncoderMismatchError, FaissStore, InvalidInputError, ModelLoadError, StoreError
from latentrag.models.hop import SHIPPED_DIR, HopModel
from latentrag.retrievers import DenseRetriever, MultiHopRetriever
from latentrag.retrievers.multihop import HopNode, fuse, layer_top_k

BRIDGE = "What river runs through the city where Albert Einstein was born?"


# ---------------------------------------------------------------------------------------------- pure math
def test_layer_top_k_selects_the_true_top_k_of_an_unsorted_layer():
    # METHODS.md §1.4: the public code keeps 0.5 and 0.8 here; the true top-2 is 0.9 and 0.8.
    assert layer_top_k(np.array([0.9, 0.5, 0.8, 0.7]), 2).tolist() == [0, 2]
    rng = np.random.default_rng(0)
    for _ in range(50):
        s = rng.random(25)
        assert set(layer_top_k(s, 5).tolist()) == set(np.argsort(-s)[:5].tolist())
    assert layer_top_k(np.array([-np.inf, 0.1, -np.inf]), 2).tolist() == [1]
    assert layer_top_k(np.array([]), 3).tolist() == []


def _node(i: str, hop: int, path: float, qsim: float | None = None) -> HopNode:
    return HopNode(i, i, hop, path, path, question_sim=path if qsim is None else qsim)


def test_fusion_rules():
    layers = [[_node("a", 1, 0.9), _node("b", 1, 0.8), _node("c", 1, 0.7)],
              [_node("x", 2, 0.85, qsim=0.2), _node("y", 2, 0.5, qsim=0.75)]]
    assert [n.id for n, _ in fuse(layers, 4, "dense_fill", 0.25)] == ["a", "x", "y", "b"]
    # path: max(question similarity, path score); y's own similarity to the question (0.75) beats c (0.7)
    path = fuse(layers, 5, "path")
    assert [n.id for n, _ in path] == ["a", "x", "b", "y", "c"] and path[1][1] == pytest.approx(0.85)
    # dense_keep reserves the first 40% of k=5 (two slots) for the best dense passages
    assert [n.id for n, _ in fuse(layers, 5, "path", 0.4)] == ["a", "b", "x", "y", "c"]
    rrf = fuse(layers, 5, "rrf", 0)
    assert [n.id for n, _ in rrf][:2] == ["a", "x"] and rrf[0][1] == pytest.approx(1 / 61)
    with pytest.raises(InvalidInputError, match="fusion must be one of"):
        fuse(layers, 2, "max", 0)


def test_hop_model_formula_and_shapes():
    torch.manual_seed(0)
    m = HopModel(x_size=16, g_size=32, n_mlp=1)
    q = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    c = torch.nn.functional.normalize(torch.randn(4, 16), dim=-1)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(q - c + m.update(q, c), dim=-1)
        out = m(q, c)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4))
    got = m.next_queries(q.numpy(), c.numpy())
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-6)
    # rows are independent: batching changes nothing
    np.testing.assert_allclose(m.next_queries(q.numpy()[:1], c.numpy()[:1]), got[:1], atol=1e-6)
    with pytest.raises(InvalidInputError, match=re.escape("needs q and c of the same shape (n, 16)")):
        m.next_queries(q.numpy(), c.numpy()[:2])


def test_hop_model_save_load_and_encoder_check(tmp_path):
    m = HopModel(x_size=8, g_size=16, n_mlp=1, encoder_name="enc-a", extra={"stop_score": 0.3})
    m.save(tmp_path / "m")
    again = HopModel.load(tmp_path / "m", encoder_name="enc-a", encoder_dim=8)
    for (k, v), (_, w) in zip(m.state_dict().items(), again.state_dict().items(), strict=True):
        torch.testing.assert_close(v, w, msg=k)
    assert again.extra == {"stop_score": 0.3} and not again.training
    with pytest.raises(EncoderMismatchError, match="trained for encoder 'enc-a' \\(dim 8\\) but the encoder given is "
                       "'enc-b' \\(dim 8\\).*latentrag train multihop"):
        HopModel.load(tmp_path / "m", encoder_name="enc-b", encoder_dim=8)
    with pytest.raises(ModelLoadError, match="no hop model at"):
        HopModel.load(tmp_path / "empty")


def test_shipped_weights_are_real_and_documented():
    cfg = (SHIPPED_DIR / "config.json").read_text()
    assert "all-MiniLM-L6-v2" in cfg
    card = (SHIPPED_DIR / "MODEL_CARD.md").read_text()
    assert "latentrag train multihop" in card and "R@10" in card
    m = HopModel.load(None)
    # trained, not random: the learned update is not the small init's near-zero output
    assert float(m.w_o.weight.detach().abs().mean()) > 1e-3
    assert m.extra.get("dev_multihop")


# ---------------------------------------------------------------------------------------------- retriever
def test_hop_network_moves_the_query_to_the_second_hop(store, encoder):
    # The hop network's own job: from (question, hop-1 passage) to a query for the bridge passage.
    # The question alone ranks Ulm (Einstein's birthplace) below unrelated people; after reading
    # Einstein's passage, the next query ranks it first after Einstein himself.
    r = MultiHopRetriever(store, k=3, links=False)
    q = encoder.encode([BRIDGE])
    all_ids = store.ids()
    V = np.stack([h.vector for h in store.get(all_ids, with_vectors=True)])
    before = [all_ids[j] for j in np.argsort(-(V @ q[0]))]
    nxt = r.model.next_queries(q, V[[all_ids.index("einstein")]])
    after = [all_ids[j] for j in np.argsort(-(V @ nxt[0]))]
    assert before[0] == after[0] == "einstein"
    assert before.index("ulm") > 2 and after.index("ulm") == 1


def test_multihop_tree_metadata(store):
    dense = [h.id for h in DenseRetriever(store, k=3).retrieve(BRIDGE)]
    hits = MultiHopRetriever(store, k=3).retrieve(BRIDGE)  # default: hop network + title links
    ids = [h.id for h in hits]
    assert ids[0] == dense[0] == "einstein"  # hop 1: the person
    assert "ulm" in ids and "ulm" not in dense  # the birthplace, which dense retrieval misses
    assert len(set(ids)) == len(ids) == 3
    for h in hits:
        assert {"hop", "parent_id", "path_score", "via"} <= set(h.metadata)
        assert type(h.score) is float
    hop2 = [h for h in hits if h.metadata["hop"] == 2]
    assert hop2 and all(h.metadata["parent_id"] == "einstein" for h in hop2)


def test_trace_renders_a_tree(store):
    r = MultiHopRetriever(store, k=5, n_hops=2)
    tr = r.trace(BRIDGE)
    text = tr.render()
    assert text.startswith(f"Q: {BRIDGE}") and "hop 1" in text and "hop 2" in text
    assert "└─" in text and "[einstein]" in text and "[ulm]" in text
    assert tr.hops_run == 2 and len(tr.hits) == 5


def test_batch_equals_single_and_async(store):
    qs = [BRIDGE, "In which city was the director of the 1975 film about a giant shark born?",
          "What is photosynthesis?"]
    r = MultiHopRetriever(store, k=4)
    batch = [[h.id for h in hs] for hs in r.retrieve_batch(qs)]
    single = [[h.id for h in r.retrieve(q)] for q in qs]
    assert batch == single


async def test_aretrieve(store):
    r = MultiHopRetriever(store, k=2)
    hits = await r.aretrieve(BRIDGE)
    assert len(hits) == 2


def test_n_hops_one_is_the_first_stage(store):
    from latentrag.retrievers import HybridRetriever

    mh = [h.id for h in MultiHopRetriever(store, k=5, n_hops=1, first_stage="dense").retrieve(BRIDGE)]
    assert mh == [h.id for h in DenseRetriever(store, k=5).retrieve(BRIDGE)]
    mh = [h.id for h in MultiHopRetriever(store, k=5, n_hops=1).retrieve(BRIDGE)]  # "auto": hybrid here
    assert mh == [h.id for h in HybridRetriever(store, k=5).retrieve(BRIDGE)]


def test_score_stop_ends_branches(store):
    strict = MultiHopRetriever(store, k=5, n_hops=3, stop_score=0.99, links=False, hop_network=True).trace(BRIDGE)
    assert strict.hops_run == 2 and "score stop" in strict.stop_reason
    assert all(h.metadata["hop"] == 1 for h in strict.hits)


def test_hop_network_runs_after_a_dense_first_stage_only(store):
    # "auto": the dev sets measured the network's children adding recall after a dense hop 1 and
    # displacing better hits after the hybrid one, so the default (hybrid here) follows links alone.
    auto = MultiHopRetriever(store, k=5)
    assert auto.first_stage is not None and auto.hop_network is False and "hop_network=False" in repr(auto)
    tr = auto.trace(BRIDGE)
    assert tr.stop_reason == "hop network off" and tr.hops_run == 2  # the Ulm title link is hop 2
    assert "ulm" in [h.id for h in tr.hits] and all(h.metadata["via"] != "hop" for h in tr.hits)
    dense = MultiHopRetriever(store, k=5, first_stage="dense", links=False)
    assert dense.hop_network is True
    assert any(h.metadata["via"] == "hop" for h in dense.trace(BRIDGE).hits)
    forced = MultiHopRetriever(store, k=5, hop_network=True, links=False).trace(BRIDGE)
    assert forced.hops_run == 2 and any(h.metadata["via"] == "hop" for h in forced.hits)
    with pytest.raises(InvalidInputError, match="hop_network must be True, False or 'auto', got 'yes'"):
        MultiHopRetriever(store, hop_network="yes")  # type: ignore[arg-type]


def test_bad_input(store, encoder):
    with pytest.raises(InvalidInputError, match="n_hops must be a positive integer, got 0"):
        MultiHopRetriever(store, n_hops=0)
    with pytest.raises(InvalidInputError, match="top_n must be a positive integer, got -1"):
        MultiHopRetriever(store, top_n=-1)
    with pytest.raises(InvalidInputError, match="k must be a positive integer, got 0"):
        MultiHopRetriever(store, k=0)
    with pytest.raises(StoreError, match="the store is empty"):
        MultiHopRetriever(FaissStore(encoder)).retrieve("x")
    with pytest.raises(InvalidInputError, match="query must be a non-empty string"):
        MultiHopRetriever(store).retrieve("")


def test_model_for_another_encoder_is_refused(store, tmp_path):
    HopModel(x_size=384, g_size=16, n_mlp=1, encoder_name="BAAI/bge-small-en").save(tmp_path / "m")
    with pytest.raises(EncoderMismatchError, match="trained for encoder 'BAAI/bge-small-en'"):
        MultiHopRetriever(store, model=tmp_path / "m")


# ---------------------------------------------------------------------------------------------- frameworks
def test_langchain_standard_suite_and_metadata(store):
    pytest.importorskip("langchain_core")
    from latentrag.integrations.langchain import LangChainRetriever

    lc = LangChainRetriever(retriever=MultiHopRetriever(store, k=4), k=3)
    docs = lc.invoke(BRIDGE)
    assert len(docs) == 3 and docs[0].id and "hop" in docs[0].metadata["retrieval"]
    assert len(lc.invoke(BRIDGE, k=1)) == 1


def test_llama_index_retriever(store):
    pytest.importorskip("llama_index.core")
    from latentrag.integrations.llama_index import LlamaIndexRetriever

    nodes = LlamaIndexRetriever(MultiHopRetriever(store, k=3)).retrieve(BRIDGE)
    assert len(nodes) == 3 and "ulm" in {n.node.node_id for n in nodes}


def test_cli_query_explain_prints_the_tree(store, tmp_path, capsys):
    from latentrag.cli import main as cli

    store.save(tmp_path / "s")
    assert cli(["query", BRIDGE, "--store", str(tmp_path / "s"), "--k", "3", "--hops", "2", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "3 hits in" in out and f"Q: {BRIDGE}" in out and "hop 1" in out and "└─" in out


def test_numpy_inference_follows_load_state_dict():
    a, b = HopModel(x_size=8, g_size=16, n_mlp=1), HopModel(x_size=8, g_size=16, n_mlp=1)
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.3)
    q = np.eye(8, dtype=np.float32)[:3]
    a.next_queries(q, q[::-1].copy())  # fills the inference copy
    a.load_state_dict(b.state_dict())
    np.testing.assert_allclose(a.next_queries(q, q[::-1].copy()), b.next_queries(q, q[::-1].copy()), atol=1e-6)


def test_cli_json_explain_is_one_json_object(store, tmp_path, capsys):
    import json

    from latentrag.cli import main as cli

    store.save(tmp_path / "s")
    assert cli(["query", BRIDGE, "--store", str(tmp_path / "s"), "--hops", "2", "--explain", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hits"] and out["tree"][0]["hop"] == 1 and out["tree"][0]["parent"] is None
    assert {n["id"] for n in out["tree"]} >= {h["id"] for h in out["hits"]}
