"""Title links: what counts as a title, how mentions match, index freshness, and the entity hop of
MultiHopRetriever (linked passages in the tree and the final hits, filters, stores that cannot list)."""

from __future__ import annotations

import pytest

from latentrag import FaissStore, InvalidInputError
from latentrag.retrievers import DenseRetriever, MultiHopRetriever
from latentrag.retrievers.links import TitleLinks, subject_of, title_of, title_words

BRIDGE = "What river runs through the city where Albert Einstein was born?"


def test_title_of_prefers_metadata_then_a_short_prefix():
    assert title_of("whatever: x", {"title": " Ulm "}) == "Ulm"
    assert title_of("Psycho (1960 film): Psycho is a 1960 horror film.") == "Psycho (1960 film)"
    assert title_of("It rained. The firm said: no.") is None  # a sentence, not a title
    assert title_of("note: lower-case prefixes are not titles") is None
    assert title_of("No colon at all.") is None
    assert title_of("Ulm\nUlm is a city: on the Danube.") == "Ulm"  # a first line
    assert title_of("# Albert Einstein\nA physicist.") == "Albert Einstein"
    assert title_of("It rained all day long.\nThen: sun.") is None
    assert title_of("A " + "very " * 20 + "long heading: body") is None


def test_generic_titles_are_not_linkable():
    assert title_words("The") is None and title_words("Ox") is None and title_words("river") is None
    assert title_words("Ulm") == ("Ulm",)
    assert title_words("John St John, 11th Baron") == ("John", "St", "John", "11th", "Baron")


def test_mentions_are_whole_word_case_sensitive_and_skip_the_own_title(encoder):
    store = FaissStore.from_texts(
        ["Cork: a city in Ireland.", "Psycho (1960 film): a film by Alfred Hitchcock.",
         "Alfred Hitchcock: directed Psycho; born in London.", "London: capital of England.",
         "The: a stray generic title."],
        ids=["cork", "psycho", "hitch", "london", "the"], encoder=encoder)
    links = TitleLinks(store)
    assert len(links) == 5  # Cork, Psycho (1960 film), Psycho, Alfred Hitchcock, London
    assert links.mentioned("The cork of a bottle; Corkscrew.") == []  # case and whole words
    assert links.mentioned("He was born in Cork. The end.") == ["cork"]
    # the disambiguated title matches its bare name; the own title is skipped
    assert links.mentioned("Alfred Hitchcock: directed Psycho; born in London.",
                           exclude_title="Alfred Hitchcock") == ["psycho", "london"]
    assert links.title("psycho") == "Psycho (1960 film)" and links.title("nope") is None


def test_index_follows_store_writes(encoder):
    store = FaissStore.from_texts(["Ulm: a city on the Danube."], ids=["ulm"], encoder=encoder)
    links = TitleLinks(store)
    assert links.mentioned("Born in Ulm near the Danube.") == ["ulm"]
    store.add(["Danube: a river."], ids=["danube"])
    assert links.mentioned("Born in Ulm near the Danube.") == ["ulm", "danube"]
    store.delete(["ulm"])
    assert links.mentioned("Born in Ulm near the Danube.") == ["danube"]


def test_a_store_that_cannot_list_gets_no_links(store):
    class SearchOnly:  # a vector store that can search but not enumerate its documents
        encoder, dim = store.encoder, store.dim

        def __len__(self):
            return len(store)

        def search(self, *a, **kw):
            return store.search(*a, **kw)

        def vectors(self, ids):
            return store.vectors(ids)

    assert MultiHopRetriever(SearchOnly()).links is None
    assert [h.id for h in MultiHopRetriever(SearchOnly(), k=3).retrieve(BRIDGE)][0] == "einstein"
    with pytest.raises(InvalidInputError, match="title links need a store that can list its documents"):
        MultiHopRetriever(SearchOnly(), links=True)
    with pytest.raises(InvalidInputError, match="links must be True, False, 'auto' or a TitleLinks, got 'yes'"):
        MultiHopRetriever(store, links="yes")  # type: ignore[arg-type]


def test_linked_passage_joins_the_tree_and_the_hits(store):
    dense = [h.id for h in DenseRetriever(store, k=2).retrieve(BRIDGE)]
    hits = MultiHopRetriever(store, k=2, top_n=2).retrieve(BRIDGE)
    assert dense[0] == hits[0].id == "einstein"
    assert "ulm" not in dense
    ulm = next(h for h in hits if h.id == "ulm")  # Einstein's passage names Ulm: the bridge entity
    assert ulm.metadata["via"] == "link" and ulm.metadata["hop"] == 2 and ulm.metadata["parent_id"] == "einstein"
    assert hits[0].metadata["via"] == "dense+link"  # the question names Albert Einstein
    trace = MultiHopRetriever(store, k=5).trace(BRIDGE)
    assert " link " in trace.render()
    # without links, the tree holds no linked node
    plain = MultiHopRetriever(store, k=5, links=False).trace(BRIDGE)
    assert " link " not in plain.render()
    assert all(h.metadata["via"] in ("dense", "hop") for h in plain.hits)


def test_linked_passages_respect_the_filter(store):
    r = MultiHopRetriever(store, k=6, filter={"group": "people"})
    for h in r.retrieve(BRIDGE):
        assert h.metadata["group"] == "people"


def test_one_shared_index_and_n_hops_one_stays_dense(store):
    links = TitleLinks(store)
    a = MultiHopRetriever(store, k=4, links=links)
    assert a.links is links and [h.id for h in a.retrieve(BRIDGE)] == \
        [h.id for h in MultiHopRetriever(store, k=4).retrieve(BRIDGE)]
    one = [h.id for h in MultiHopRetriever(store, k=5, n_hops=1, first_stage="dense").retrieve(BRIDGE)]
    assert one == [h.id for h in DenseRetriever(store, k=5).retrieve(BRIDGE)]


@pytest.mark.parametrize(("text", "subject"), [
    ("Michael Curtiz (born Manó Kaminer) was a Hungarian-American film director.", "Michael Curtiz"),
    ("The Godfather is a 1972 American crime film.", "The Godfather"),
    ("Museum of Modern Art is in New York.", "Museum of Modern Art"),
    ("Ludwig van Beethoven was a German composer.", "Ludwig van Beethoven"),
    ("Cincinnati, Ohio is a city.", "Cincinnati"),
    ("In 1990 the plant closed.", None),
    ("He was born in Ulm.", None),
    ("The plant closed in 1990.", None),
    ("it rained all day.", None),
    ("This Is A Very Long Title Cased Sentence Of Words", None),
])
def test_subject_of_reads_the_name_a_passage_opens_with(text, subject):
    assert subject_of(text) == subject


def test_untitled_passages_link_by_their_subject(encoder):
    # No titles anywhere: the bridge passage is found because the first passage names its subject.
    texts = ["Jaws is a 1975 thriller film directed by Steven Spielberg.",
             "Steven Spielberg is an American filmmaker whose early years were spent in Cincinnati.",
             "Cincinnati is a city in Ohio on the Ohio River.",
             "Honey bees live in colonies with one queen.",
             "Alien is a 1979 science fiction horror film directed by Ridley Scott.",
             "Psycho is a 1960 horror thriller film directed by Alfred Hitchcock.",
             "The Birds is a 1963 horror thriller film directed by Alfred Hitchcock."]
    store = FaissStore.from_texts(texts, ids=["jaws", "spielberg", "cincinnati", "bees", "alien", "psycho", "birds"],
                                  encoder=encoder)
    links = TitleLinks(store)
    assert links.title("spielberg") == "Steven Spielberg" and links.inferred("spielberg")
    assert "spielberg" in links.mentioned(texts[0])
    assert TitleLinks(store, infer_subjects=False).mentioned(texts[0]) == []
    question = "What city is the director of the thriller film Jaws from?"
    assert "spielberg" not in [h.id for h in DenseRetriever(store, k=3).retrieve(question)]
    trace = MultiHopRetriever(store, k=3, top_n=3, links=links).trace(question)
    found = {h.id: h.metadata["via"] for h in trace.hits}
    assert found.get("spielberg") == "entity"
    assert " entity " in trace.render()
