"""The app of the pip workload: the bench edits this file."""
import time

from flask import Flask, jsonify

app = Flask(__name__)
STARTED = time.time()


@app.get("/")
def hello():
    return jsonify(hello="kiln", up=round(time.time() - STARTED, 1))


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=8000)
