"""Field types shared by the resource schemas."""

import marshmallow as ma

NAME = ma.validate.Length(min=1, max=128)


class Name(ma.fields.String):
    """A display name: 1-128 printable characters, no leading or trailing blanks."""

    def __init__(self, **kwargs):
        super().__init__(
            validate=[NAME, ma.validate.Regexp(r"^\S(.*\S)?$", error="Use 1-128 printable characters.")], **kwargs
        )

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if not text.isprintable():
            raise ma.ValidationError("Use printable characters only.")
        return text
