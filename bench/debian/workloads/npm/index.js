// The app of the npm workload: the bench edits this file.
const express = require("express");
const ms = require("ms");

const app = express();
const started = Date.now();

app.get("/", (req, res) => {
  res.json({ hello: "kiln", up: ms(Date.now() - started) });
});

app.listen(process.env.PORT || 3000);
