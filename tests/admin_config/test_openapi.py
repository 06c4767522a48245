"""The OpenAPI document describes exactly the routes the admin API serves."""

import re

PATH_PARAMS = {"ca_id": "id"}  # Flask's names → the document's


def test_document_matches_routes(admin_app, admin):
    document = admin.get("/api/v1/fleet/openapi.json").json
    assert document["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    served = set()
    for rule in admin_app.url_map.iter_rules():
        if not rule.rule.startswith("/api/"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>",
                      lambda m: "{" + PATH_PARAMS.get(m.group(1), m.group(1)) + "}", rule.rule)
        served |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served
