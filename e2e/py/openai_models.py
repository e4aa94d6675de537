"""Looks models up through the gateway with the official OpenAI Python SDK.

Usage: openai_models.py BASE_URL KNOWN_MODEL UNKNOWN_MODEL [API_KEY]
Prints one JSON object: the listed ids, the model retrieved, and the error for the unknown one.
"""
import json
import sys

import openai
from openai import OpenAI


def main() -> None:
    base_url, known, unknown = sys.argv[1], sys.argv[2], sys.argv[3]
    api_key = sys.argv[4] if len(sys.argv) > 4 else "sk-client"
    client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
    listed = [m.id for m in client.models.list()]
    model = client.models.retrieve(known)
    try:
        client.models.retrieve(unknown)
        missing = None
    except openai.NotFoundError as e:
        missing = {"status": e.status_code, "code": e.code, "message": e.message}
    print(json.dumps({
        "listed": listed,
        "retrieved": {"id": model.id, "object": model.object, "owned_by": model.owned_by},
        "missing": missing,
    }))


if __name__ == "__main__":
    main()
