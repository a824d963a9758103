"""A Hub Collection that lists the published variants of a plan, kept up to date by `plan aggregate`.

The collection is found by its title in the owner's namespace (created when missing). Each published
variant is an item whose note starts with `zhprune-hub:` and says what it is; a note that changed is
updated. Items this tool added for variants that are no longer in the plan are removed; anything
else in the collection (items someone added by hand) is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zhprune_hub.errors import HubError

NOTE_PREFIX = "zhprune-hub: "
#: The Hub caps collection descriptions at 150 characters and item notes at 500.
MAX_DESCRIPTION, MAX_NOTE = 150, 500


@dataclass
class CollectionSync:
    """What one update of the collection did."""

    title: str
    slug: str
    url: str
    items: list[str]
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def sync_collection(
    title: str,
    *,
    namespace: str | None,
    description: str,
    published: dict[str, str],
    keep: set[str],
    endpoint: str | None = None,
    token: str | None = None,
) -> CollectionSync:
    """Make the collection list every published variant with its note.

    Args:
        namespace: user or organisation; None means the token's user.
        published: repo id -> note for the variants published (or unchanged) in this run.
        keep: repo ids of every variant of the plan: our items for these are never removed, even when
            this run did not publish them (a failed variant keeps its earlier version).

    Raises:
        HubError: the Hub refused or could not be reached; the message says which step.
    """
    from huggingface_hub import HfApi

    from zhprune_hub.hub import DEFAULT_ENDPOINT, failure_reason, resolve_endpoint

    endpoint = resolve_endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token or None)
    step = f"creating or reading the collection {title!r}"
    try:
        collection = api.create_collection(
            title, namespace=namespace, description=description[:MAX_DESCRIPTION], exists_ok=True
        )
        result = CollectionSync(title=title, slug=collection.slug, url=collection.url, items=[])
        current = {item.item_id: item for item in collection.items if item.item_type == "model"}
        for repo_id, text in published.items():
            note = (NOTE_PREFIX + text)[:MAX_NOTE]
            item = current.get(repo_id)
            if item is None:
                step = f"adding {repo_id!r} to the collection"
                api.add_collection_item(collection.slug, item_id=repo_id, item_type="model", note=note, exists_ok=True)
                result.added.append(repo_id)
            elif item.note != note:
                step = f"updating the note of {repo_id!r}"
                api.update_collection_item(collection.slug, item.item_object_id, note=note)
                result.updated.append(repo_id)
        for repo_id, item in current.items():
            if repo_id not in published and repo_id not in keep and (item.note or "").startswith(NOTE_PREFIX):
                step = f"removing {repo_id!r}, no longer in the plan, from the collection"
                api.delete_collection_item(collection.slug, item.item_object_id, missing_ok=True)
                result.removed.append(repo_id)
        step = "reading the collection back"
        result.items = [i.item_id for i in api.get_collection(collection.slug).items if i.item_type == "model"]
    except Exception as exc:
        where = endpoint or DEFAULT_ENDPOINT
        reason = failure_reason(exc, where)
        if reason is None:
            raise
        raise HubError(f"Updating the collection {title!r} on {where} failed while {step} ({reason}).") from exc
    return result
