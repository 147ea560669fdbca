"""Pagination of list endpoints: flask-smorest's `page` / `page_size` and its X-Pagination header."""

DEFAULT_PAGINATION = {"page": 1, "page_size": 100, "max_page_size": 1000}
# With page_size <= 1000, the offset stays far below PostgreSQL's bigint (page=99999999999999999 was a 500).
MAX_PAGE = 1_000_000


def paginate(parameters) -> dict:
    """flask-smorest's pagination parameters as the services' keyword arguments."""
    return {"page": parameters.page, "page_size": parameters.page_size}


def page_of(items: list, parameters) -> list:
    """Paginate a short list held in memory (members, invites, organizations)."""
    parameters.item_count = len(items)
    return items[parameters.first_item : parameters.last_item + 1]
