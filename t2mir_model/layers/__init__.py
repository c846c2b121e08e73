"""Building blocks shared by every model family: attention, expert banks, routing maths, the KV
cache, the feed-forward sublayer and the plain-data routing summaries.

Modules: `attention`, `experts`, `routing`, `routing_summary`, `kv_cache`, `feed_forward`. The
public names are exported by `t2mir_model`.
"""
