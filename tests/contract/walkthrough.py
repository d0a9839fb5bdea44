"""The README's walk-through, through a client generated from the API's own /openapi.json by
openapi-python-client (no hand edits): register, post with an Idempotency-Key (and retry it), read the
command's status, home, profile, follow, like twice, comment, then act as someone else and read someone
else's command. Every answer is parsed into the generated models; any status the document does not declare
raises (`raise_on_unexpected_status`).

Reads are eventually consistent (the projection follows the commit within milliseconds), so a read that
must show a committed write is retried for a few seconds.

Usage: walkthrough.py BASE_URL [POST_ID_FILE]  (tokens in $ALICE and $BOB, from dev mode's banner; the
post's id is written to POST_ID_FILE for the fuzzer)
"""

import os
import sys
import time
import uuid

from socialnet_api_client import AuthenticatedClient
from socialnet_api_client.api.reads import get_comments, get_home, get_post, get_profile
from socialnet_api_client.api.writes import add_comment, create_post, create_user, follow, get_command, like
from socialnet_api_client.models import (
    Accepted,
    CommandState,
    CommandStatus,
    CommentPage,
    CreatePost,
    CreateUser,
    Post,
    PostPage,
    Problem,
    Profile,
    TextBody,
)


def client(base, token):
    return AuthenticatedClient(base_url=base, token=token, raise_on_unexpected_status=True, timeout=10.0)


def accepted(answer) -> Accepted:
    assert answer.status_code == 202, f"expected 202, got {answer.status_code}: {answer.parsed}"
    assert isinstance(answer.parsed, Accepted), answer.parsed
    assert answer.headers["location"] == f"/v1/commands/{answer.parsed.command_id}"
    return answer.parsed


def committed(c, a: Accepted) -> CommandStatus:
    """Follow the 202's command until it is decided; it must commit."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = get_command.sync(a.command_id, client=c)
        assert isinstance(status, CommandStatus), status
        if status.status != CommandState.QUEUED:
            assert status.status == CommandState.COMMITTED, f"{a.command_id}: {status.to_dict()}"
            return status
        time.sleep(0.05)
    raise AssertionError(f"{a.command_id} still queued after 20 s")


def eventually(read, ok):
    """A read, retried until `ok` holds of its answer (the projection follows the commit)."""
    deadline = time.monotonic() + 10
    while True:
        answer = read()
        if ok(answer) or time.monotonic() > deadline:
            return answer
        time.sleep(0.05)


def problem(answer, status: int) -> Problem:
    assert answer.status_code == status, f"expected {status}, got {answer.status_code}: {answer.parsed}"
    assert isinstance(answer.parsed, Problem), answer.parsed
    assert answer.headers["content-type"] == "application/problem+json"
    return answer.parsed


def main(base: str) -> uuid.UUID:
    alice, bob = client(base, os.environ["ALICE"]), client(base, os.environ["BOB"])
    steps = []

    # Register both users.
    for c, handle, name in ((alice, "alice", "Alice"), (bob, "bob", "Bob")):
        committed(c, accepted(create_user.sync_detailed(client=c, body=CreateUser(handle=handle, display_name=name))))
    steps.append("register")

    # Post with an Idempotency-Key; the retry is the same command; the key on another body is 422.
    key = str(uuid.uuid4())
    first = accepted(create_post.sync_detailed(client=alice, body=CreatePost(body="hello, world"), idempotency_key=key))
    retry = accepted(create_post.sync_detailed(client=alice, body=CreatePost(body="hello, world"), idempotency_key=key))
    assert (retry.command_id, retry.post_id) == (first.command_id, first.post_id), "a retry is the same command"
    reuse = problem(create_post.sync_detailed(client=alice, body=CreatePost(body="other"), idempotency_key=key), 422)
    assert key in reuse.detail, reuse.detail
    steps.append("post with a key (retry, reuse)")

    status = committed(alice, first)
    assert status.position is not None
    steps.append("status")

    home = eventually(lambda: get_home.sync(user_id="alice", client=alice), lambda h: len(h.items) == 1)
    assert isinstance(home, PostPage) and [p.post_id for p in home.items] == [first.post_id], home
    profile = eventually(lambda: get_profile.sync(user_id="alice", client=alice), lambda p: p.posts_count == 1)
    assert isinstance(profile, Profile) and profile.posts_count == 1 and profile.handle == "alice", profile
    steps += ["home", "profile"]

    committed(alice, accepted(follow.sync_detailed(user_id="alice", target_id="bob", client=alice)))
    bob_profile = eventually(lambda: get_profile.sync(user_id="bob", client=alice), lambda p: p.followers_count)
    assert isinstance(bob_profile, Profile) and bob_profile.followers_count == 1, bob_profile
    steps.append("follow")

    for _ in range(2):
        committed(alice, accepted(like.sync_detailed(post_id=first.post_id, user_id="alice", client=alice)))
    comment = accepted(add_comment.sync_detailed(post_id=first.post_id, client=alice, body=TextBody(body="first!")))
    committed(alice, comment)
    post = eventually(lambda: get_post.sync(post_id=first.post_id, client=alice), lambda p: p.comment_count == 1)
    assert isinstance(post, Post) and (post.like_count, post.comment_count) == (1, 1), post
    comments = eventually(lambda: get_comments.sync(post_id=first.post_id, client=alice), lambda c: c.items)
    assert isinstance(comments, CommentPage) and [c.comment_id for c in comments.items] == [comment.comment_id]
    steps += ["like twice (one like)", "comment"]

    # Bob acting as alice is 403; bob reading alice's command is the 404 of an unknown one.
    problem(follow.sync_detailed(user_id="alice", target_id="bob", client=bob), 403)
    problem(get_command.sync_detailed(first.command_id, client=bob), 404)
    problem(get_command.sync_detailed(uuid.uuid4(), client=bob), 404)
    steps += ["act as someone else: 403", "someone else's command: 404"]

    print("walk-through passed through the generated client: " + ", ".join(steps))
    return first.post_id


if __name__ == "__main__":
    post_id = main(sys.argv[1])
    if len(sys.argv) > 2:
        with open(sys.argv[2], "w") as f:
            f.write(str(post_id))
