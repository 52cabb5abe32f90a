"""The commands of ``cbdsl``, one module per group of commands; :mod:`cbdsl.cli` imports a module only when
one of its commands runs (or when ``cbdsl --help`` lists them all).

    console.py    exit codes, usage problems, a policy's text, a pool card's schema: shared with the
                  console script (:mod:`cbdsl.entry`), so without click
    check.py      the check both front ends run: entry's fast path and click's `check`
    common.py     click helpers of several modules: a policy argument or a usage error, JSON on stdout
    policy.py     check, fmt, parse: a policy's text, no pool, no rows
    selection.py  compile, explain, why, and run's work: a policy against its pool
    run.py        run: alone, so that --threads is set before Polars and Numba load
    pool.py       pool info, pool add-asset, pool make-demo, pool import
    loop.py       init, submit, log, show, leaderboard, verify, reproduce: a sandbox and its ledger
    research.py   search, diff, trajectory: research on the loop's iterations
    catalogue.py  methods: the method catalogue

Each imports what it needs at the top; an import inside a function keeps a
heavy library off a path that does not need it, and says so.
"""
