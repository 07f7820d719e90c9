"""What a running lifespan yields: a typed `Bundle` or a read-only `ResourceMap`."""

from __future__ import annotations

import sys
import typing
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeGuard, TypeVar, overload

from pydantic import BaseModel, ValidationError, create_model

from lifespan_kit._graph import suggest
from lifespan_kit._resource import Resource
from lifespan_kit._types import ValueT
from lifespan_kit.errors import (
    BundleTypeError,
    InvalidBundleError,
    UnknownResourceError,
)

if TYPE_CHECKING:
    from lifespan_kit._models import Bundle

BundleT = TypeVar("BundleT", bound="Bundle")


def bundle_resource_names(bundle: object) -> tuple[str, ...]:
    """Return the resource names a bundle class asks for, in field order."""
    if not is_bundle_class(bundle):
        raise InvalidBundleError(found=_describe(bundle))
    return tuple(field.alias or name for name, field in bundle.model_fields.items())


def is_bundle_class(found: object) -> TypeGuard[type[Bundle]]:
    """Tell whether `found` is a `Bundle` subclass, without creating `Bundle`.

    Until something asked for `Bundle` (see `lifespan_kit._models`), nothing
    can subclass it.
    """
    models = sys.modules.get("lifespan_kit._models")
    if models is None or not isinstance(found, type):
        return False
    bundle: type[Bundle] = models.Bundle
    return issubclass(found, bundle)


def create_bundle(bundle: type[BundleT], values: Mapping[str, object]) -> BundleT:
    """Validate `values` against the bundle's fields.

    Raises:
        BundleTypeError: For the first field whose value has the wrong type; the
            other failures are chained as ``__context__`` through a group.
    """
    names = bundle_resource_names(bundle)
    data = {name: values[name] for name in names}
    try:
        validated = bundle.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, BundleTypeError] = {}
        for error in exc.errors():
            name = str(error["loc"][0])
            if name not in errors:  # one error per field, not one per list item
                errors[name] = _bundle_error(bundle, values, name, error["msg"])
        raise BundleTypeGroup(list(errors.values())) from exc
    except Exception:
        if _runs_own_code(bundle):
            raise  # the bundle's validator or model_post_init failed: its error
        # pydantic cannot build or run the bundle's validator: some field is
        # annotated with what it cannot check (a protocol that is not
        # runtime-checkable, a class whose isinstance check raises). Check each
        # field on its own, and leave unchecked the ones that cannot be.
        return _create_field_by_field(bundle, data)
    if _runs_own_code(bundle):
        return validated  # what the bundle's own validators made of the values
    # Checked, the resources themselves: validation copies containers (a list
    # resource would be a copy) and converts numbers (an int to a float).
    return bundle.model_construct(set(bundle.model_fields), **data)


def _runs_own_code(bundle: type[BaseModel]) -> bool:
    """Tell whether validating `bundle` runs code of its own (validators, post-init)."""
    decorators = bundle.__pydantic_decorators__
    return bool(
        decorators.validators
        or decorators.field_validators
        or decorators.root_validators
        or decorators.model_validators
        or bundle.__pydantic_post_init__ is not None
    )


def _create_field_by_field(bundle: type[BundleT], data: dict[str, object]) -> BundleT:
    errors: list[BundleTypeError] = []
    by_name: dict[str, object] = {}
    for field_name, field in bundle.model_fields.items():
        key = field.alias or field_name
        by_name[field_name] = data[key]
        definition: dict[str, Any] = {field_name: (field.annotation, field)}
        try:
            single: type[BaseModel] = create_model(
                bundle.__name__, __config__=bundle.model_config, **definition
            )
            single.model_validate({key: data[key]})
        except ValidationError as exc:
            first = exc.errors()[0]  # one error per field
            errors.append(_bundle_error(bundle, data, key, first["msg"]))
        except Exception:  # this field cannot be checked
            continue
    if errors:
        raise BundleTypeGroup(errors)
    return bundle.model_construct(set(by_name), **by_name)


class BundleTypeGroup(Exception):  # noqa: N818  # internal carrier, never escapes
    """Every bundle field that failed validation."""

    def __init__(self, errors: list[BundleTypeError]) -> None:
        super().__init__(errors)
        self.errors = errors


def _bundle_error(
    bundle: type[Bundle], values: Mapping[str, object], name: str, problem: str
) -> BundleTypeError:
    by_resource = {
        field.alias or field_name: field
        for field_name, field in bundle.model_fields.items()
    }
    return BundleTypeError(
        name,
        bundle=bundle.__name__,
        expected=_type_name(by_resource[name].annotation),
        found=type(values[name]).__qualname__,
        problem=problem,
    )


def _type_name(annotation: object) -> str:
    """Name a field's type as it is written: `int`, `list[int]`, `Optional[str]`."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return str(annotation).replace("typing.", "")


def _describe(bundle: object) -> str:
    if isinstance(bundle, type):
        return f"the class {bundle.__name__}"
    return f"an instance of {type(bundle).__name__}"


class ResourceMap(Mapping[str, object]):
    """A read-only view of every started resource's value, by name.

    Look a value up by name (typed `object`) or by its `Resource` handle
    (typed as the factory's value).

    Example:
        ```python
        async with registry.lifespan() as resources:
            database = resources[db]  # by its handle: typed as Database
            same = resources["db"]  # by name: typed as object
        ```

    Added in 0.1.
    """

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, object]) -> None:
        self._values = dict(values)

    @overload
    def __getitem__(self, key: str, /) -> object: ...
    @overload
    def __getitem__(self, key: Resource[ValueT], /) -> ValueT: ...
    def __getitem__(self, key: str | Resource[ValueT], /) -> object:
        name = key if isinstance(key, str) else key.name
        try:
            return self._values[name]
        except KeyError:
            close, listed = suggest(name, list(self._values))
            raise UnknownResourceError(
                name,
                context="not started by this lifespan",
                suggestions=close,
                available=listed,
                phase="running",
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ResourceMap({list(self._values)!r})"
