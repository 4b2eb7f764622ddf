"""Front-door dialects ↔ OpenAI chat completions: pure translation, one module per direction.

`messages_request` / `messages_answer`: Anthropic's Messages API in, chat out, and back.
`responses_request` / `responses_answer`: OpenAI's Responses API in, chat out, and back.
Each request module checks its dialect with `gateway.protocol` tables before translating.
"""
