"""Dedup methods: which rows count as duplicates (`dedup METHOD(...)`), one module per method.

``exact(*cols)`` groups rows with equal values of the columns;
``minhash(text, ...)`` groups texts whose estimated Jaccard similarity of
word n-grams is at least ``threshold`` (Lee et al., 2022); ``semantic(emb,
...)`` groups rows whose embeddings lie within cosine distance ``eps`` of
each other inside k-means clusters (SemDeDup, Abbas et al., 2023). Each
group keeps one row (DESIGN.md: the best by the `select` score, ties by id
hash, unless the method's ``keep`` says otherwise).

A module here is named by its method's id and registers it with
:func:`~cbdsl.scorers.registry.dedup_method`: the signature the checker
reads (inputs, parameters, cost class, catalogue method) and the ``run``
function the engine calls after the filters with a
:class:`~cbdsl.scorers.api.DedupContext`. The registry imports a module
the first time a policy names its id (and all of them when it lists the
methods: :data:`cbdsl.scorers.registry.PACKAGES`), so a new method is a new
file. ``cbdsl check`` imports these modules: NumPy, Polars and the kernels
are imported inside ``run``, the context classes only for typing.
"""
