"""Images in the store: ``images``, ``inspect``, ``history``, ``tag``, ``rmi``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dockyard._api._common import Root, open_store, store_root, wanted_platform
from dockyard.errors import DockyardError, StoreError, UsageError
from dockyard.rootless.namespace import in_namespace

if TYPE_CHECKING:
    from dockyard.store.images import HistoryItem

__all__ = [
    "ImageDetails",
    "ImageSummary",
    "ManifestResult",
    "RemoveResult",
    "TagResult",
    "history",
    "images",
    "inspect",
    "manifest_create",
    "rmi",
    "tag",
]


@dataclass(frozen=True)
class ImageSummary:
    """One row of ``images``: an image under one of its names, as ``docker images`` lists
    them. An image with no tag is listed once per repository it has a digest name in, or
    once with ``<none>`` as repository and tag."""

    id: str  # "sha256:..."
    repository: str  # familiar name ("busybox", "localhost:5000/app"), or "<none>"
    tag: str  # or "<none>"
    digest: str  # the manifest digest this repository pins, or "<none>"
    created: str | None  # the config's "created" (RFC 3339), as stored
    size: int  # bytes: the sum of the uncompressed layer sizes
    # for a platform's image of a multi-platform name: its os/arch[/variant], else ""
    platform: str = ""

    @property
    def short_id(self) -> str:
        """The 12-hex-digit id Docker shows."""
        return self.id.removeprefix("sha256:")[:12]


@dataclass(frozen=True)
class ImageDetails:
    """An image's details: the Docker ``inspect`` document (``Id``, ``RepoTags``, ``Config``,
    ``RootFS`` ... plus ``Descriptor`` and ``Manifest``) and its main fields, typed."""

    id: str
    tags: tuple[str, ...]  # familiar names (RepoTags)
    digests: tuple[str, ...]  # familiar name@digest (RepoDigests)
    created: str
    size: int
    architecture: str
    os: str
    layers: tuple[str, ...]  # diff ids, base first
    config: Mapping[str, Any]  # Docker's Config object (Env, Cmd, Entrypoint, Labels ...)
    document: Mapping[str, Any] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The ``inspect`` document, as ``dockyard inspect`` prints it."""
        return dict(self.document)


@dataclass(frozen=True)
class TagResult:
    """What ``tag`` did: ``name`` (a full reference) now points at ``image_id``."""

    image_id: str
    name: str


@dataclass(frozen=True)
class RemoveResult:
    """What ``rmi`` did: the names removed (familiar form, in order) and the image deleted,
    if its last name went (or it was removed by id)."""

    untagged: tuple[str, ...]
    deleted: str | None


def images(reference: str | None = None, *, filters: Sequence[str] = (),
           root: Root = None) -> tuple[ImageSummary, ...]:
    """The images in the store, newest first, one entry per name (see :class:`ImageSummary`).

    ``reference`` (``REPOSITORY[:TAG]``) keeps only the entries of that repository (and tag).
    ``filters``: docker's ``images --filter`` values (``reference=PATTERN``,
    ``dangling=true|false``, ``before=IMAGE``, ``since=IMAGE``, ``label=KEY[=VALUE]``; see
    ``dockyard._api._filters``); an unknown key is a UsageError.
    """
    from dockyard._api._filters import parse_filters

    wanted = parse_filters(filters)
    from dockyard.image.reference import parse_reference

    want_name: str | None = None
    want_tag: str | None = None
    if reference:
        try:
            ref = parse_reference(reference, default_tag=False)
        except UsageError as err:
            raise UsageError(f"images: {err}") from None
        want_name, want_tag = ref.name, ref.tag
    out: list[ImageSummary] = []
    # Multi-platform names: each platform's image is listed under the name, with its platform.
    platform_of: dict[str, str] = {}
    held_by: dict[str, list[str]] = {}
    with open_store(root) as store:
        records = store.list_images()
        for index_name, _digest in store.list_index_names():
            for plat, held in store.index_images(index_name):
                platform_of[held.id] = plat
                held_by.setdefault(held.id, []).append(index_name)
    for image in records:
        entries: list[tuple[str, str, str]] = []  # (full name, familiar repo, tag)
        for ref in image.tags:
            entries.append((ref.name, ref.familiar_name, ref.tag or "<none>"))
        for held_name in held_by.get(image.id, ()):
            held_ref = parse_reference(held_name)
            entry = (held_ref.name, held_ref.familiar_name, held_ref.tag or "<none>")
            if held_ref.tag and entry not in entries:
                entries.append(entry)
        if not entries:
            digest_repos = sorted({(r.name, r.familiar_name) for r in image.digests})
            entries = [(name, fam, "<none>") for name, fam in digest_repos] or [
                ("", "<none>", "<none>")
            ]
        for full, repo, tag_ in entries:
            if want_name is not None and (full != want_name or (want_tag and tag_ != want_tag)):
                continue
            digest = next(
                (r.digest for r in image.digests if r.name == full and r.digest), "<none>"
            )
            out.append(ImageSummary(image.id, repo, tag_, digest, image.created, image.size,
                                    platform_of.get(image.id, "")))
    if wanted:
        return _filtered(out, wanted, root)
    return tuple(out)


def _filtered(rows: list[ImageSummary], wanted: dict[str, list[str]],
              root: Root) -> tuple[ImageSummary, ...]:
    from dockyard._api._filters import apply_filters

    with open_store(root) as store:
        def created_of(image: str) -> str | None:
            return store.get_image(image).created

        def labels_of(image_id: str) -> Mapping[str, str]:
            return store.read_config(store.get_image(image_id)).config.labels or {}

        return apply_filters(rows, wanted, created_of, labels_of)


def inspect(image: str, *, root: Root = None, platform: str | None = None) -> ImageDetails:
    """The details of ``image`` (a name, id or id prefix). NotFoundError if there is none.

    For a multi-platform name: the default platform's image (``platform``: that one's), and
    the document has ``Platforms`` (each platform the store has: its image id and manifest
    digest) and ``Index`` (the image index's media type and digest)."""
    with open_store(root) as store:
        doc = store.inspect_image(store.get_image(image, platform=wanted_platform(platform)))
        index = store.get_index(image)
        if index is not None:
            doc["Index"] = {"mediaType": index[1].media_type, "digest": index[0]}
            doc["Platforms"] = [
                {"Platform": plat, "Id": rec.id, "Digest": rec.manifest_digest}
                for plat, rec in store.index_images(image)]
    return ImageDetails(
        id=doc["Id"],
        tags=tuple(doc["RepoTags"]),
        digests=tuple(doc["RepoDigests"]),
        created=doc["Created"],
        size=doc["Size"],
        architecture=doc["Architecture"],
        os=doc["Os"],
        layers=tuple(doc["RootFS"]["Layers"]),
        config=doc["Config"],
        document=doc,
    )


def history(image: str, *, root: Root = None,
            platform: str | None = None) -> tuple[HistoryItem, ...]:
    """The history of ``image``, newest first, as ``docker history`` shows it: the top row
    carries the image id, the rows below ``<missing>``; sizes are uncompressed.
    ``platform`` (``os/arch[/variant]``) picks that platform's image of a multi-platform
    name (default: the host's, else the first)."""
    with open_store(root) as store:
        return tuple(store.history(store.get_image(image, platform=wanted_platform(platform))))


def tag(source: str, target: str, *, root: Root = None) -> TagResult:
    """Point ``target`` (``NAME[:TAG]``, default tag ``latest``) at the image ``source``."""
    from dockyard.image.reference import parse_reference

    ref = parse_reference(target)
    if ref.digest is not None:
        raise UsageError(f"refusing to create a tag with a digest reference: {target}")
    with open_store(root) as store:
        image = store.get_image(source)
        index = store.get_index(source)
        if index is not None:  # a multi-platform name: the new name is multi-platform too
            store.put_index(store.blobs.read_bytes(index[0]), [str(ref)])
        else:
            store.tag(image.id, str(ref))
    return TagResult(image.id, str(ref))


@in_namespace
def rmi(image: str, *, force: bool = False, root: Root = None) -> RemoveResult:
    """Remove an image name, as ``docker rmi``: a name is untagged, and the image goes with
    its last name; an id removes the image and all its names, which needs ``force`` when
    several names point at it. Blobs are freed by :func:`dockyard.prune`."""
    from dockyard.image.reference import parse_reference
    from dockyard.store.reserve import making_room

    with making_room(store_root(root)), open_store(root) as store:
        record = store.get_image(image)
        try:
            full = str(parse_reference(image))
            by_name = full in record.names
        except DockyardError:
            by_name = False
        if by_name:
            store.untag(full)
            untagged = (parse_reference(full).familiar,)
            if (store.find_image(record.id) is not None
                    and not store.get_image(record.id).names
                    and record.id not in store.indexed_image_ids()):  # a platform of a name
                store.remove_image(record.id)
                return RemoveResult(untagged, record.id)
            return RemoveResult(untagged, None)
        if len(record.names) > 1 and not force:
            raise StoreError(
                f"unable to delete {record.short_id} (must be forced) - image is referenced "
                "in multiple repositories"
            )
        names = store.remove_image(record.id)
    return RemoveResult(tuple(parse_reference(n).familiar for n in names), record.id)


@dataclass(frozen=True)
class ManifestResult:
    """What :func:`manifest_create` stored: the index digest, the name, its platforms."""

    digest: str
    name: str
    platforms: tuple[str, ...]


def manifest_create(name: str, images: Sequence[str], *, root: Root = None) -> ManifestResult:
    """Name local images of several platforms as one multi-platform image (an index), as
    ``docker manifest create`` does in a registry: each image's platform comes from its
    config; a multi-platform image brings all its platforms. Two images of one platform are
    refused (UsageError)."""
    from dockyard.image.reference import parse_reference

    ref = parse_reference(name)
    if ref.digest is not None:
        raise UsageError(f"refusing to create a name with a digest reference: {name}")
    with open_store(root) as store:
        entries: dict[str, str] = {}
        for spec in images:
            for platform, image in store.index_images(spec) or [
                    (str(store.read_config(store.get_image(spec)).platform.normalized()),
                     store.get_image(spec))]:
                if entries.get(platform, image.id) != image.id:
                    raise UsageError(f"two images for {platform}: {entries[platform][7:19]} "
                                     f"and {image.short_id} ({spec})")
                entries[platform] = image.id
        digest = store.put_platform_images(list(entries.items()), [str(ref)])
    return ManifestResult(digest, str(ref), tuple(entries))
