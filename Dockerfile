# One TeamTrack replica: daphne serving HTTP and WebSockets. compose.yaml runs several.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# Static files are collected into the image and served by WhiteNoise from every replica.
RUN DEBUG=false SECRET_KEY=only-for-collectstatic-not-a-real-secret-key \
    python manage.py collectstatic --noinput --verbosity 0

USER nobody
EXPOSE 8000
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", \
     "--websocket-max-message-size", "524288", "--websocket-max-frame-size", "524288", \
     "--access-log", "/dev/null", \
     "teamtrack.asgi:application"]
