"""Human feedback: a local web page where people compare two completions and pick the better.

`ferrolm label MODEL_DIR --prompts FILE` serves it; judgements go to a SQLite database
(`store`), pairs are sampled ahead of time on a background thread (`pairs`), and the routes
and static page live in `server` and `static/`. `ferrolm label export` writes the preference
JSONL read by `ferrolm.preferences.load_preferences`.

The web server (Starlette + uvicorn) is the optional `label` extra: importing this package
needs neither; `ferrolm.label.server` does.
"""
