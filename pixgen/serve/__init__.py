"""`pixgen serve`: a local web studio and HTTP API that keep the models in memory.

form.py turns the Settings declarations into the page's form and reads web requests back into
Settings; jobs.py queues jobs and runs them one at a time through `pixgen.api.generate`;
app.py is the Starlette app (routes, token, file serving). Starlette and uvicorn are imported
only here (the `serve` extra), never by `pixgen --help`."""
