"""The qmu-bench harness: grid specs, stage identity, the Ray runner, the result store and the `qmu` CLI.

    grid_spec  YAML grid -> validated GridSpec -> cell configs (errors name file, key and problem)
    identity   cell ids, content-hashed stage keys, the deduplicated stage DAG
    estimate   rough stage costs for --dry-run and for scheduling priorities
    store      Parquet cells/examples (group commits, compaction) and safetensors artifacts, DuckDB views
    runner     Ray actor pool and the dependency-driven driver loop (the only module that knows Ray)
    progress   rich bars on a terminal, plain lines in logs; both name the cells and running stages
    hardware   the QPU job ledger and budget (`qmu hw`, and `qmu run` on ibm: backends)
    ui         error lines (exit 2, no markup, no token) and the one duration format
    cli        `qmu run|status|compact|query|report|hw|bench`
"""
