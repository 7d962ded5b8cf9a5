# One TeamTrack replica: daphne serving HTTP and WebSockets, on uvloop (teamtrack/serve.py). compose.yaml runs several.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir --require-hashes -r requirements.txt

COPY . .
# Static files are collected into the image and served by WhiteNoise from every replica. With
# DEBUG off (the manifest storage) the settings want a real key: a throwaway one, kept nowhere.
RUN DEBUG=false SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    python manage.py collectstatic --noinput --verbosity 0

USER nobody
EXPOSE 8000
CMD ["python", "-m", "teamtrack.serve", "-b", "0.0.0.0", "-p", "8000", \
     "--websocket-max-message-size", "524288", "--websocket-max-frame-size", "524288", \
     "--access-log", "/dev/null", \
     "teamtrack.asgi:application"]
