# One image for every process of the stack: web (gunicorn), the Celery workers, beat and Flower.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VAR_DIR=/data/var \
    ARTIFACT_ROOT=/data/models

# libgomp: scikit-learn's OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# Static files are collected into the image; WhiteNoise serves them from gunicorn.
RUN DEBUG=1 python manage.py collectstatic --no-input -v 0 \
    && useradd --create-home --uid 1000 app \
    && mkdir -p /data/var /data/models \
    && chown -R app:app /data

USER app
EXPOSE 8000 5555
CMD ["gunicorn", "mlsite.wsgi", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "16", "--access-logfile", "-"]
