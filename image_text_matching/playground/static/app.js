// The playground page's logic: read the chosen files as data: URLs, POST them with the
// captions to /api/score, and show the scores table and the heat map, or the server's
// {"error": ...} sentence. Rule: text from the user or the server goes in with textContent.
'use strict';

const $ = (id) => document.getElementById(id);
let limits = null;

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
  $('status').textContent = '';
}

function clearError() {
  $('error').hidden = true;
  $('error').textContent = '';
}

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

// A byte count for people, as the server writes it: 512 bytes, 3.9 KiB, 12.0 MiB.
function mib(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  if (bytes < 1048576) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1048576).toFixed(1)} MiB`;
}

function captionLines() {
  return $('captions').value.split('\n').map((s) => s.trim()).filter((s) => s.length > 0);
}

// Checks the page can make before sending (the server checks everything again).
function checkInputs(files, texts) {
  if (files.length === 0) return 'Upload at least one image.';
  if (texts.length === 0) return 'Type at least one caption (one per line).';
  if (files.length > 1 && texts.length > 1) {
    return `Got ${files.length} images and ${texts.length} captions: upload one image with ` +
      'several captions, or several images with one caption.';
  }
  if (limits) {
    const count = files.length > 1 ? files.length : texts.length;
    if (count > limits.max_candidates) {
      return `Too many candidates: ${count}, the limit is ${limits.max_candidates}; ` +
        'remove some and score again.';
    }
    for (const file of files) {
      if (file.size > limits.max_image_bytes) {
        return `Image '${file.name}' is too large: ${mib(file.size)}, the limit is ` +
          `${mib(limits.max_image_bytes)} per image. Save it smaller and upload it again.`;
      }
    }
  }
  return null;
}

function fmt(x) {
  return Number.isFinite(x) ? x.toFixed(4) : String(x);
}

function render(answer) {
  const body = $('scores').querySelector('tbody');
  body.replaceChildren();
  answer.candidates.forEach((cand, i) => {
    const row = document.createElement('tr');
    if (i === answer.best) row.classList.add('best');
    const cells = [String(i + 1), cand.label];
    for (const key of ['dsd', 'attention', 'itm']) cells.push(fmt(cand[key]));
    cells.forEach((text, j) => {
      const cell = document.createElement('td');
      cell.textContent = text;
      if (j >= 2) {
        cell.classList.add('num');
        const key = ['dsd', 'attention', 'itm'][j - 2];
        cell.dataset.score = key;
        if (answer.best_by[key] === i) cell.classList.add('top');
      }
      row.appendChild(cell);
    });
    body.appendChild(row);
  });
  const what = answer.retrieval === 'text' ?
    `Which caption fits '${answer.query}'?` : `Which image fits "${answer.query}"?`;
  $('results-title').textContent = what;
  $('itm-meaning').textContent = answer.itm_kind === '-d_cond' ?
    'ITM = -d_cond (Diffusion-ITM)' :
    'ITM = d_uncond - d_cond (Diffusion-ITM with unconditional normalisation)';
  $('heatmap').src = answer.heatmap;
  $('heatmap-caption').textContent =
    `Cross-attention of the best match (${answer.heatmap_label}), blue = low, red = high.`;
  $('results').hidden = false;
  $('status').textContent =
    `Scored ${answer.candidates.length} candidate(s) in ${answer.seconds.toFixed(2)} s ` +
    `(${answer.timesteps} timesteps, ${answer.image_size} px).`;
}

async function score() {
  clearError();
  $('results').hidden = true;  // never show the scores of an earlier request next to an error
  const files = Array.from($('images').files);
  const texts = captionLines();
  const problem = checkInputs(files, texts);
  if (problem) {
    showError(problem);
    return;
  }
  const button = $('score');
  button.disabled = true;
  $('status').textContent = 'Scoring...';
  try {
    const images = [];
    for (const file of files) images.push({name: file.name, data: await readAsDataURL(file)});
    const response = await fetch('api/score', {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({images, texts}),
    });
    let answer = null;
    try {
      answer = await response.json();
    } catch (err) {
      answer = {error: `The server answered ${response.status} without a readable message.`};
    }
    if (!response.ok || answer.error) {
      showError(answer.error || `The server answered ${response.status}.`);
      return;
    }
    render(answer);
  } catch (err) {
    showError(`The request failed: ${err.message}. Is the playground server still running?`);
  } finally {
    button.disabled = false;
  }
}

function showPreviews() {
  const box = $('previews');
  box.replaceChildren();
  for (const file of Array.from($('images').files)) {
    const img = document.createElement('img');
    img.alt = file.name;
    img.title = file.name;
    img.src = URL.createObjectURL(file);
    img.onload = () => URL.revokeObjectURL(img.src);
    img.onerror = () => URL.revokeObjectURL(img.src);
    box.appendChild(img);
  }
}

async function loadInfo() {
  try {
    const response = await fetch('api/info');
    const info = await response.json();
    limits = info.limits;
    $('model-info').textContent =
      `Model: ${info.model}; ${info.timesteps} timesteps; images scored at ` +
      `${info.image_size} x ${info.image_size} px; at most ${limits.max_candidates} ` +
      `candidates and ${mib(limits.max_image_bytes)} per image.`;
  } catch (err) {
    $('model-info').textContent = 'Could not read the model description from the server.';
  }
}

$('score').addEventListener('click', score);
$('images').addEventListener('change', showPreviews);
loadInfo();
