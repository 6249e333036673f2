"""`baby serve`: a local web page that streams generation and shows why each token came out.

    inspect.py   the numbers (NumPy and littlebaby only): attention weights, the distributions a token was
                 drawn from, the logit lens; computed by the model's own layers, never re-implemented
    app.py       the Starlette app: the runs, generation streamed as server-sent events, the inspections
    protocol.py  what a request may hold (each bound a clear 4xx) and how answers and events are written
    server.py    binding the socket, uvicorn, Ctrl-C
    static/      the page: index.html, app.js, style.css (no build step, nothing from the network)

Only inspect.py may be imported without the ``serve`` extra (the notebook draws the same views with it).
"""
