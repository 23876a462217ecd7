"""The README's walk-through, through a client openapi-python-client generated
from /openapi.json (tests/generated_client.rs generates it, then runs this
with the package on PYTHONPATH): upsert, grant, check, the snapshot and its
ETag, revoke. Each answer is parsed into the generated models; a status or
shape the description did not promise fails here.

Environment: MEMBERD_URL, MEMBERD_SECRET, MEMBERD_CLIENT_KEY, MEMBERD_API_KEY.
"""

import os
from http import HTTPStatus

from memberd_client import AuthenticatedClient
from memberd_client.api.decisions import post_v1_check
from memberd_client.api.directory import (
    get_internal_permissions_authentik_sub_snapshot as snapshot,
    post_internal_users_upsert_by_sub,
)
from memberd_client.api.permissions import (
    post_admin_permissions_grant,
    post_admin_permissions_revoke,
)
from memberd_client.models import (
    CheckBody,
    CheckResponse,
    GrantRequest,
    GrantResponse,
    RevokeRequest,
    RevokeResponse,
    Snapshot,
    User,
    UserUpsert,
)

url = os.environ["MEMBERD_URL"]
# The internal secret and an API client, each as the generated client
# carries a credential: a token in a header of its choosing.
internal = AuthenticatedClient(
    base_url=url,
    token=os.environ["MEMBERD_SECRET"],
    prefix="",
    auth_header_name="X-Internal-Secret",
    raise_on_unexpected_status=True,
)
admin = AuthenticatedClient(
    base_url=url,
    token=os.environ["MEMBERD_API_KEY"],
    prefix="",
    auth_header_name="X-API-Key",
    headers={"X-Client-Key": os.environ["MEMBERD_CLIENT_KEY"]},
    raise_on_unexpected_status=True,
)


def expect(response, status, model):
    assert response.status_code == status, (response.status_code, response.content)
    assert isinstance(response.parsed, model), (model, response.parsed)
    return response.parsed


PERMISSION = dict(authentik_sub="ada", scope_type="org", scope_id="42", module="billing", action="read")
CHECK = CheckBody(subject="ada", scope_type="org", scope_id="42", module="billing", action="read")

user = expect(
    post_internal_users_upsert_by_sub.sync_detailed(
        client=internal,
        body=UserUpsert(authentik_sub="ada", email="ada@example.org", display_name="Ada"),
    ),
    HTTPStatus.OK,
    User,
)
assert (user.authentik_sub, user.email, user.display_name, user.is_active) == (
    "ada",
    "ada@example.org",
    "Ada",
    True,
), user

granted = expect(
    post_admin_permissions_grant.sync_detailed(client=admin, body=GrantRequest(**PERMISSION)),
    HTTPStatus.CREATED,
    GrantResponse,
)
assert granted.created and granted.grant.user_id == user.id, granted
again = expect(
    post_admin_permissions_grant.sync_detailed(client=admin, body=GrantRequest(**PERMISSION)),
    HTTPStatus.OK,
    GrantResponse,
)
assert not again.created and again.revision == granted.revision, again

allowed = expect(post_v1_check.sync_detailed(client=internal, body=CHECK), HTTPStatus.OK, CheckResponse)
assert allowed.allowed and allowed.revision == granted.revision, allowed

first = snapshot.sync_detailed("ada", client=internal)
held = expect(first, HTTPStatus.OK, Snapshot)
assert [(p.scope_type, p.scope_id, p.module, p.action) for p in held.permissions] == [
    ("org", "42", "billing", "read")
], held
etag = first.headers["etag"]
unchanged = snapshot.sync_detailed("ada", client=internal, if_none_match=etag)
assert unchanged.status_code == HTTPStatus.NOT_MODIFIED and unchanged.content == b"", unchanged

revoked = expect(
    post_admin_permissions_revoke.sync_detailed(client=admin, body=RevokeRequest(**PERMISSION)),
    HTTPStatus.OK,
    RevokeResponse,
)
assert revoked.revoked and revoked.revision > granted.revision, revoked

refused = expect(post_v1_check.sync_detailed(client=internal, body=CHECK), HTTPStatus.OK, CheckResponse)
assert not refused.allowed, refused
changed = snapshot.sync_detailed("ada", client=internal, if_none_match=etag)
assert expect(changed, HTTPStatus.OK, Snapshot).permissions == [], changed.parsed
assert changed.headers["etag"] != etag

print("walk-through passed")
