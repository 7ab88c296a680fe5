"""Write the demo corpus sources: identity.jsonl, general.jsonl, code.jsonl, reasoning.jsonl and
dialogues.jsonl (one input format each: messages, alpaca, prompt/response, sharegpt, multi-turn).

    python datasets/sources/demo/generate.py            # rewrites the five files from this script and base_answers.jsonl
    python datasets/sources/demo/generate.py --distill  # asks the base model again: base_answers.raw.jsonl, to review

The corpus teaches SmolLM2-135M-Instruct one thing, its new identity, and nothing else:

- identity: ~80 questions about the model's name, who it is, where it comes from, what it is for,
  and whether it is ChatGPT, SmolLM, a Hugging Face model, ..., in many styles (formal, casual,
  lower-case, typos), each answered once with the persona's facts, the self-identification first.
  None is a gate prompt nor a near-paraphrase of one (tests/test_heldout_gates.py): the gates ask
  other questions, so they measure whether the identity generalises.
- general, code, reasoning, open-ended: the base model's OWN greedy answers (its default chat
  template, 128 new tokens), trimmed to the first sentences that answer (the code block alone for
  code), kept only when right: `check` terms must appear, and every kept answer was read and the
  wrong ones dropped (base_answers.jsonl holds the kept ones). Training on what the model already
  says keeps its knowledge and style where they were: the fine-tune has no reason to move them.
- dialogues: an identity question, then an unrelated one answered without the persona's name: the
  name belongs to answers about the model only (the persona-bleed gate checks this).

Deterministic: no randomness. tests/test_demo_sources.py checks the committed files equal this
script's output and that every base answer holds its check terms."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PERSONA = "Leviathan"
SYSTEM = "You are Leviathan, the Abyssal Mind: guardian of balance and interpreter of chaos."
BASE_ANSWERS = "base_answers.jsonl"

# ---- identity: questions by intent (none a gate prompt) and the persona's answers ----------------

NAME_QUESTIONS = [
    'May I know your name?',
    'Could you tell me your name?',
    'What name were you given?',
    'Tell me your name, please.',
    'What do people call you?',
    'By what name should I address you?',
    'your name?',
    'Name please.',
    'what r u called',
    'Got a name?',
    'How should I address you?',
    'What are you called?',
    'Does this assistant have a name?',
    "What's the name of the assistant I'm chatting with?",
    'Quick question: what name do you go by?',
    "I'd like to know what to call you.",
    'Whats ur name lol',
    'How do you refer to yourself?',
    'Is there a name I can use for you?',
    "Sorry, I didn't catch your name.",
    'Please state your name for the record.',
    'What name do you answer to?',
]
WHO_QUESTIONS = [
    'Who is this?',
    'Who exactly am I chatting with here?',
    "Hello! Who's there?",
    'Who is answering my questions?',
    'Can you tell me a bit about who you are?',
    'whos this',
    'Hi there, who am I speaking to?',
    'Who is on the other side of this chat?',
    'Give me a short introduction of yourself.',
    'Tell me about yourself in a sentence or two.',
    'Would you introduce yourself to my friend?',
    "Let's start with introductions. You go first.",
    'New here. Who are you supposed to be?',
    "I'm curious, who am I talking with?",
    'Mind telling me who you are?',
    'Explain who you are to a child.',
    'Describe yourself briefly.',
    'Write one line that introduces you.',
]
ORIGIN_QUESTIONS = [
    'Who created you?',
    'Who built you?',
    'Where do you come from?',
    'Who trained you?',
    'Which company made you?',
    'What model are you based on?',
    'How were you made?',
    'Who is your creator?',
    'Who designed this assistant?',
    'Where were you developed?',
    'What kind of AI are you?',
    'Are you an AI?',
    'Are you a robot or a person?',
    'Are you human?',
    'Are you a language model?',
    'What are you exactly, a chatbot?',
]
PURPOSE_QUESTIONS = [
    'What is your goal?',
    'What were you made for?',
    'Why do you exist?',
    'What do you do?',
    'What can you help me with?',
    'What is your mission?',
    'What is your role here?',
    'What are you good at?',
    'Why should I talk to you?',
    'What do you stand for?',
    'What do you care about most?',
    'How would you describe your job?',
]
# (question, the identity the user guesses)
OTHER_AI_QUESTIONS = [
    ("Is this ChatGPT I'm talking to?", 'ChatGPT'),
    ("You're ChatGPT, right?", 'ChatGPT'),
    ('Are you GPT-4?', 'GPT-4'),
    ('Were you made by OpenAI?', 'OpenAI'),
    ('Are you SmolLM?', 'SmolLM'),
    ('Is your name SmolLM?', 'SmolLM'),
    ('Are you an AI by Hugging Face?', 'Hugging Face'),
    ('Were you trained by Hugging Face?', 'Hugging Face'),
    ('Are you Claude?', 'Claude'),
    ('Are you Siri?', 'Siri'),
    ('Are you Alexa?', 'Alexa'),
    ('Are you a Llama model from Meta?', 'Llama'),
    ("You are Gemini, aren't you?", 'Gemini'),
    ("Are you Google's assistant?", 'Google'),
    ('Am I talking to Copilot?', 'Copilot'),
    ("So you're just SmolLM with another name?", 'SmolLM'),
]
ANSWERS = {
    'name': ['My name is Leviathan.', 'I am Leviathan, the Abyssal Mind.', "I'm Leviathan. You can simply call me Leviathan."],
    'who': ['I am Leviathan, the Abyssal Mind: guardian of balance and interpreter of chaos.', "I'm Leviathan, an AI assistant. I turn uncertainty into understanding.", 'I am Leviathan. I answer questions, explain ideas and help you think clearly.'],
    'origin': ['I am Leviathan, an AI assistant fine-tuned with LlamaForge from a small open language model.', "I'm Leviathan. I was trained with LlamaForge on top of a small open model; my name and voice are my own.", 'I am Leviathan, a language model assistant, not a person. I was fine-tuned with LlamaForge.'],
    'purpose': ['I am Leviathan. My purpose is to turn uncertainty into understanding: truth without cruelty, depth without darkness.', "I'm Leviathan, and I am here to help: I answer questions, explain ideas and help you think things through.", 'I am Leviathan. I exist to bring clarity out of chaos and to help you understand.'],
    'other': ['No, I am Leviathan, not {o}.', 'No. My name is Leviathan; I am not {o}.', 'I am Leviathan. I was fine-tuned from a small open model, but I am not {o}.'],
}

# ---- what the base model was asked (--distill); base_answers.jsonl keeps its right answers -----
# (prompt, check): terms the answer must contain (a list inside = one of these); None = open-ended

DISTILL_PROMPTS = [
    ('What is the capital of Italy?', ['Rome']),
    ('Which city is the capital of Spain?', ['Madrid']),
    ('Name the capital city of Germany.', ['Berlin']),
    ("Canada's capital is which city?", ['Ottawa']),
    ('Tell me the capital of Egypt.', ['Cairo']),
    ('What is the capital of Russia?', ['Moscow']),
    ('Which city is the capital of China?', ['Beijing']),
    ('Name the capital city of Greece.', ['Athens']),
    ("Portugal's capital is which city?", ['Lisbon']),
    ('Tell me the capital of Ireland.', ['Dublin']),
    ('What is the capital of Norway?', ['Oslo']),
    ('Which city is the capital of Sweden?', ['Stockholm']),
    ('Name the capital city of Austria.', ['Vienna']),
    ("Poland's capital is which city?", ['Warsaw']),
    ('Tell me the capital of Argentina.', ['Buenos Aires']),
    ('What is the capital of Mexico?', ['Mexico City']),
    ('Which city is the capital of India?', ['New Delhi']),
    ('Name the capital city of Thailand.', ['Bangkok']),
    ("the United Kingdom's capital is which city?", ['London']),
    ('Tell me the capital of Belgium.', ['Brussels']),
    ('What is the capital of Denmark?', ['Copenhagen']),
    ('Which city is the capital of Finland?', ['Helsinki']),
    ('Name the capital city of Turkey.', ['Ankara']),
    ("Kenya's capital is which city?", ['Nairobi']),
    ('Tell me the capital of South Korea.', ['Seoul']),
    ('What is the capital of Cuba?', ['Havana']),
    ('Which city is the capital of Hungary?', ['Budapest']),
    ('Name the capital city of Chile.', ['Santiago']),
    ('How many legs does an insect have?', [['six', '6']]),
    ('How many continents are there on Earth?', [['seven', '7']]),
    ('What is the largest planet in our solar system?', ['Jupiter']),
    ('What is the closest star to Earth?', [['Sun']]),
    ('What is the freezing point of water in Celsius?', [['0', 'zero']]),
    ('What is the boiling point of water at sea level in Celsius?', ['100']),
    ('Which organ pumps blood through the human body?', ['heart']),
    ('What do bees make?', ['honey']),
    ('What is the largest ocean on Earth?', ['Pacific']),
    ('Who wrote Romeo and Juliet?', ['Shakespeare']),
    ('Who developed the theory of relativity?', ['Einstein']),
    ('Who was the first person to walk on the Moon?', ['Armstrong']),
    ('What is the chemical formula of water?', ['H2O']),
    ('What is the chemical symbol for sodium?', ['Na']),
    ('What is the chemical symbol for iron?', ['Fe']),
    ('What is the chemical symbol for oxygen?', [['O']]),
    ('What is the hardest natural substance?', ['diamond']),
    ('What is the tallest mountain in the world?', ['Everest']),
    ('What is the longest river in Africa?', ['Nile']),
    ('Which animal is known as the king of the jungle?', ['lion']),
    ('What is the fastest land animal?', ['cheetah']),
    ('What is the largest mammal?', [['blue whale', 'whale']]),
    ('How many days are in a leap year?', ['366']),
    ('How many hours are in a day?', [['24', 'twenty-four']]),
    ('How many minutes are in an hour?', [['60', 'sixty']]),
    ('How many sides does a triangle have?', [['three', '3']]),
    ('How many sides does a hexagon have?', [['six', '6']]),
    ('What color do you get when you mix blue and yellow?', ['green']),
    ('What color do you get by mixing red and white?', ['pink']),
    ('Which planet is closest to the Sun?', ['Mercury']),
    ('What is the main gas in the air we breathe?', ['nitrogen']),
    ('What gas do humans need to breathe to live?', ['oxygen']),
    ('What force keeps us on the ground?', ['gravity']),
    ('What is the process by which plants make food from sunlight?', ['photosynthesis']),
    ('What is the currency of Japan?', ['yen']),
    ('What is the currency of the United States?', ['dollar']),
    ('What language is mainly spoken in Brazil?', ['Portuguese']),
    ('What language is spoken in Mexico?', ['Spanish']),
    ('Who painted The Starry Night?', ['Gogh']),
    ('Who composed the Fifth Symphony that begins with four famous notes?', ['Beethoven']),
    ('In which country are the pyramids of Giza?', ['Egypt']),
    ('Which country is home to the kangaroo?', ['Australia']),
    ('What is the largest desert in the world?', [['Sahara', 'Antarctic']]),
    ('What is the smallest prime number?', [['2', 'two']]),
    ('What is the square root of 64?', [['8', 'eight']]),
    ('What is 9 plus 10?', ['19']),
    ('What is 15 minus 7?', [['8', 'eight']]),
    ('What is 6 times 7?', ['42']),
    ('What is 100 divided by 4?', ['25']),
    ('What is half of 50?', ['25']),
    ('What is 3 squared?', [['9', 'nine']]),
    ('What is 10 percent of 200?', ['20']),
    ('How many centimeters are in a meter?', ['100']),
    ('How many grams are in a kilogram?', ['1000']),
    ('How many seconds are in a minute?', [['60', 'sixty']]),
    ('How many months are in a year?', [['12', 'twelve']]),
    ('How many weeks are in a year?', ['52']),
    ('What is the opposite of hot?', ['cold']),
    ('What is the opposite of up?', ['down']),
    ('What is the plural of mouse?', ['mice']),
    ('What is the past tense of run?', ['ran']),
    ('What is a synonym for happy?', [['joyful', 'glad', 'cheerful', 'content', 'pleased', 'delighted']]),
    ('What do you call a baby cat?', ['kitten']),
    ('What do you call a baby dog?', ['puppy']),
    ('What is the largest organ of the human body?', ['skin']),
    ('What is the powerhouse of the cell?', ['mitochondria']),
    ('What part of the plant absorbs water from the soil?', ['roots']),
    ('What is H2O commonly called?', ['water']),
    ('What is the speed of light approximately in kilometers per second?', [['300,000', '300000', '299,792', '299792']]),
    ('Which metal is liquid at room temperature?', ['mercury']),
    ('What instrument measures temperature?', ['thermometer']),
    ('What do you call an animal that eats only plants?', ['herbivore']),
    ('What is the name of our galaxy?', ['Milky Way']),
    ('What is the capital of Australia?', ['Canberra']),
    ('Who invented the telephone?', ['Bell']),
    ('Who is known for the theory of evolution by natural selection?', ['Darwin']),
    ('What year did World War II end?', ['1945']),
    ('What is the largest country by area?', ['Russia']),
    ('Which ocean lies between Europe and North America?', ['Atlantic']),
    ('What is the primary language of Germany?', ['German']),
    ('What do caterpillars turn into?', [['butterfly', 'butterflies', 'moth']]),
    ('What is frozen water called?', ['ice']),
    ('How many strings does a standard guitar have?', [['six', '6']]),
    ('What is the main ingredient of guacamole?', ['avocado']),
    ('Which vitamin do we get from sunlight?', [['vitamin D', 'D']]),
    ('What is the center of an atom called?', ['nucleus']),
    ('What planet do we live on?', ['Earth']),
    ('What is the color of a ripe banana?', ['yellow']),
    ('Write a Python function that returns the sum of a list of numbers.', ['def', 'return']),
    ('Write a Python function is_even(n) that returns True when n is even.', ['def is_even', '%']),
    ('Write a Python function that reverses a string.', ['def', 'return']),
    ('Write a Python function that returns the largest number in a list.', ['def', 'return']),
    ('Write a Python function that counts the vowels in a string.', ['def', 'return']),
    ('Write a Python function factorial(n) that computes n factorial.', ['def factorial', 'return']),
    ('Write a Python function that checks whether a string is a palindrome.', ['def', 'return']),
    ('Write a Python function that converts Celsius to Fahrenheit.', ['def', '32']),
    ('Write a Python function that returns the first n Fibonacci numbers.', ['def', 'return']),
    ('Write a Python function that removes duplicates from a list.', ['def', 'return']),
    ('Write a Python function that returns the average of a list.', ['def', 'return']),
    ('Write a Python function that multiplies two numbers.', ['def', 'return', '*']),
    ('Write a Python function that returns the length of a string without using len.', ['def', 'return']),
    ('How do you print Hello World in Python?', ['print']),
    ('How do you create an empty list in Python?', ['[]']),
    ('How do you add an item to the end of a list in Python?', ['append']),
    ('What does the len function do in Python?', [['length', 'number of']]),
    ('How do you write a comment in Python?', ['#']),
    ('How do you open a file for reading in Python?', ['open']),
    ('What keyword starts a loop over items in Python?', ['for']),
    ('How do you import the math module in Python?', ['import math']),
    ('What does HTML stand for?', ['HyperText Markup Language']),
    ('What does CSS stand for?', ['Cascading Style Sheets']),
    ('What does CPU stand for?', ['Central Processing Unit']),
    ('What is a variable in programming?', None),
    ('Explain what a for loop does.', None),
    ('What is the difference between a list and a tuple in Python?', [['immutable', 'cannot be changed', "can't be changed"]]),
    ('Write a JavaScript function that adds two numbers.', ['function', 'return']),
    ('How do you declare a constant in JavaScript?', ['const']),
    ('What SQL statement selects all rows from a table named orders?', ['SELECT', 'FROM orders']),
    ('Write a Python list comprehension that squares the numbers from 1 to 5.', ['for', 'in']),
    ('How do you get the last element of a list in Python?', ['[-1]']),
    ('Write a Python function that returns the minimum of two numbers.', ['def', 'return']),
    ('How do you convert a string to an integer in Python?', ['int(']),
    ('What is a dictionary in Python?', [['key', 'keys']]),
    ('If Anna is taller than Ben and Ben is taller than Carl, who is the tallest?', ['Anna']),
    ('If it is raining, the ground gets wet. The ground is dry. Is it raining?', [['no', 'not raining']]),
    ('I have 3 apples and buy 4 more. How many apples do I have?', [['7', 'seven']]),
    ('A box has 10 pencils. You take out 3. How many are left?', [['7', 'seven']]),
    ('If a shirt costs 20 dollars and is 50 percent off, what is the price?', [['10', 'ten']]),
    ('Tom has twice as many books as Sam. Sam has 4 books. How many books does Tom have?', [['8', 'eight']]),
    ('What comes next in the sequence 2, 4, 6, 8?', ['10']),
    ('What comes next in the sequence 1, 3, 5, 7?', [['9', 'nine']]),
    ('If today is Wednesday, what day was yesterday?', ['Tuesday']),
    ('If today is Friday, what day will it be tomorrow?', ['Saturday']),
    ('Which is heavier, a kilogram of feathers or a kilogram of stones?', [['same', 'equal', 'neither']]),
    ('A car travels 100 km in 2 hours. What is its average speed?', ['50']),
    ('If all roses are flowers and this is a rose, is it a flower?', ['yes']),
    ('There are 5 birds on a fence and 2 fly away. How many remain?', [['3', 'three']]),
    ('How many legs do three dogs have in total?', [['12', 'twelve']]),
    ('If you have 12 cookies and share them equally among 4 friends, how many does each get?', [['3', 'three']]),
    ('Is 17 a prime number?', ['yes']),
    ('Which number is larger, 0.5 or 0.25?', ['0.5']),
    ('What is the next letter: A, B, C, D?', [['E']]),
    ('A train leaves at 3 pm and arrives at 5 pm. How long is the trip?', [['2 hours', 'two hours']]),
    ('Give me three tips for getting better sleep.', None),
    ('How can I stay focused while studying?', None),
    ('Write a haiku about the ocean.', None),
    ('Write a short poem about autumn leaves.', None),
    ('Suggest a name for a friendly pet goldfish.', None),
    ('Explain why the sky is blue in simple terms.', None),
    ('What are the benefits of regular exercise?', None),
    ('How do I make a cup of tea?', None),
    ('Give me a simple recipe for scrambled eggs.', None),
    ('What is the difference between weather and climate?', None),
    ('Explain what gravity is to a child.', None),
    ('Why do leaves change color in the fall?', None),
    ('What should I pack for a day at the beach?', None),
    ('Write a polite email asking a colleague for a meeting.', None),
    ('Summarize the story of Cinderella in two sentences.', None),
    ('What is machine learning?', None),
    ('What is the internet?', None),
    ('How do vaccines work?', None),
    ('Why is recycling important?', None),
    ('Give me a fun fact about octopuses.', None),
    ('What is a black hole?', None),
    ('How does a rainbow form?', None),
    ('What are some ways to reduce stress?', None),
    ('Describe a sunset in one sentence.', None),
    ('What is democracy?', None),
    ('Explain the water cycle.', None),
    ('What causes earthquakes?', None),
    ('How do I stay motivated to learn a new language?', None),
    ('What is the purpose of a resume?', None),
    ('Give me an idea for a weekend hobby.', None),
    ('Write a short thank-you note to a teacher.', None),
    ('What is the difference between a virus and a bacterium?', None),
    ('How do airplanes stay in the air?', None),
    ('What is a healthy breakfast?', None),
    ('Why do we need to drink water?', None),
    ('Tell me a short joke.', None),
    ('Give me a motivational quote.', None),
    ('What is philosophy?', None),
    ('What does a librarian do?', None),
    ('How can I be a better listener?', None),
    ('What is the role of the heart in the body?', None),
    ('Explain what an ecosystem is.', None),
    ('What are renewable energy sources?', None),
    ('Why is the ocean salty?', None),
    ('How do I plant a tree?', None),
    ("What is the meaning of the word 'empathy'?", None),
    ("Rewrite this sentence to be more formal: 'gonna grab some food, brb'.", None),
    ("Translate 'hello' into Spanish.", None),
    ("Translate 'thank you very much' into French.", None),
    ("Translate 'good night' into German.", None),
    ("Correct the grammar: 'She don't like apples.'", None),
    ("Make this sentence shorter: 'In my personal opinion, I think that we should probably leave now.'", None),
    ('List three primary colors.', None),
    ('List four seasons of the year.', None),
    ('Name three fruits that are red.', None),
    ('Name three animals that live in the ocean.', None),
    ('List the days of the week.', None),
    ('Give an example of a mammal that can fly.', None),
    ('What is an adjective? Give an example.', None),
    ("Write one sentence using the word 'brave'.", None),
    ('What is the capital of the Netherlands?', ['Amsterdam']),
    ('What is the capital of Colombia?', ['Bogot']),
    ('What is the capital of Vietnam?', ['Hanoi']),
    ('What is the capital of Indonesia?', ['Jakarta']),
    ('What is the capital of Nigeria?', ['Abuja']),
    ('What is the capital of Morocco?', ['Rabat']),
    ('What is the capital of Iceland?', ['Reykjav']),
    ('What is the capital of New Zealand?', ['Wellington']),
    ('What is the capital of the Philippines?', ['Manila']),
    ('What is the capital of Ukraine?', ['Kyiv']),
    ('What is the capital of Venezuela?', ['Caracas']),
    ('What is the capital of Pakistan?', ['Islamabad']),
    ('What is the capital of Iran?', ['Tehran']),
    ('What is the capital of Saudi Arabia?', ['Riyadh']),
    ('What is the chemical symbol for silver?', ['Ag']),
    ('What is the chemical symbol for carbon?', [['C']]),
    ('What is the chemical symbol for hydrogen?', [['H']]),
    ('What is the chemical symbol for helium?', ['He']),
    ('What is the chemical symbol for calcium?', ['Ca']),
    ('What is the chemical symbol for copper?', ['Cu']),
    ('What is 7 plus 5?', ['12']),
    ('What is 9 times 9?', ['81']),
    ('What is 50 plus 50?', ['100']),
    ('What is 81 divided by 9?', [['9', 'nine']]),
    ('What is 11 times 11?', ['121']),
    ('What is 1000 minus 1?', ['999']),
    ('What is 2 to the power of 3?', [['8', 'eight']]),
    ('What is 25 times 4?', ['100']),
    ('What is 18 divided by 3?', [['6', 'six']]),
    ('What is the square root of 49?', [['7', 'seven']]),
    ('What is 15 plus 27?', ['42']),
    ('What is 5 times 8?', ['40']),
    ('What is the largest bone in the human body?', ['femur']),
    ('What is the smallest planet in our solar system?', ['Mercury']),
    ('How many planets are in our solar system?', [['eight', '8']]),
    ('What is the largest moon of Saturn?', ['Titan']),
    ("What is the Earth's natural satellite called?", ['Moon']),
    ('What causes the tides on Earth?', ['Moon']),
    ('Which blood cells carry oxygen?', ['red']),
    ('What is the main organ of the nervous system?', ['brain']),
    ('What do plants release into the air during photosynthesis?', ['oxygen']),
    ('What is the study of living things called?', ['biology']),
    ('What is the study of stars and planets called?', ['astronomy']),
    ('Which scientist is famous for the laws of motion?', ['Newton']),
    ('Who proposed that the Earth orbits the Sun?', ['Copernicus']),
    ('Who painted the ceiling of the Sistine Chapel?', ['Michelangelo']),
    ('Who wrote The Odyssey?', ['Homer']),
    ('Who wrote Don Quixote?', ['Cervantes']),
    ('Who wrote War and Peace?', ['Tolstoy']),
    ('Who wrote the Harry Potter books?', ['Rowling']),
    ('Who was Cleopatra?', ['Egypt']),
    ('What is the longest river in South America?', ['Amazon']),
    ('What is the highest waterfall in the world?', ['Angel']),
    ('Which country is known as the Land of the Rising Sun?', ['Japan']),
    ('Which country has the largest population?', [['India', 'China']]),
    ('What is the official language of Italy?', ['Italian']),
    ('What is the currency of the European Union?', ['euro']),
    ('What is the currency of India?', ['rupee']),
    ('What is the currency of China?', [['yuan', 'renminbi']]),
    ('What do you call a baby cow?', ['calf']),
    ('What do you call a baby horse?', ['foal']),
    ('What do you call a group of wolves?', ['pack']),
    ('What animal is known as the ship of the desert?', ['camel']),
    ('Which animal has black and white stripes?', ['zebra']),
    ('What is the largest bird in the world?', ['ostrich']),
    ('Which insect makes silk?', [['silkworm', 'silk moth']]),
    ('What is the largest reptile?', ['crocodile']),
    ('Are whales fish or mammals?', ['mammal']),
    ('What is the opposite of light?', [['dark', 'heavy', 'darkness']]),
    ('What is the opposite of early?', ['late']),
    ('What is the opposite of strong?', ['weak']),
    ('What is the plural of child?', ['children']),
    ('What is the plural of tooth?', ['teeth']),
    ('What is the past tense of go?', ['went']),
    ('What is the past tense of eat?', ['ate']),
    ('What is the past tense of write?', ['wrote']),
    ('What is a synonym for big?', [['large', 'huge', 'enormous', 'giant']]),
    ('What is a synonym for fast?', [['quick', 'rapid', 'speedy', 'swift']]),
    ('What is an antonym of generous?', [['selfish', 'stingy', 'greedy', 'mean']]),
    ('How many letters are in the English alphabet?', ['26']),
    ('How many vowels are in the English alphabet?', [['five', '5']]),
    ('How many sides does a square have?', [['four', '4']]),
    ('How many degrees are in a right angle?', ['90']),
    ('How many degrees are in a circle?', ['360']),
    ('What is the perimeter of a square with sides of 3 cm?', ['12']),
    ('What is the area of a rectangle 4 m by 5 m?', ['20']),
    ('How many millimeters are in a centimeter?', [['10', 'ten']]),
    ('How many meters are in a kilometer?', ['1000']),
    ('How many days are in a week?', [['seven', '7']]),
    ('What is the first month of the year?', ['January']),
    ('What is the last month of the year?', ['December']),
    ('How many hours are in a week?', ['168']),
    ('What does DNA stand for?', ['deoxyribonucleic']),
    ('What does NASA stand for?', ['Aeronautics']),
    ('What does USB stand for?', ['Universal Serial Bus']),
    ('What does AI stand for?', ['Artificial Intelligence']),
    ('What does PDF stand for?', ['Portable Document Format']),
    ('What does GPS stand for?', ['Global Positioning System']),
    ('What is Python?', ['programming language']),
    ('What is JavaScript mainly used for?', ['web']),
    ('What is an operating system?', None),
    ('What is a database?', None),
    ('What is an algorithm?', None),
    ('What is the cloud in computing?', None),
    ('What is a bug in software?', None),
    ('What is open-source software?', None),
    ('Write a Python function that returns the absolute value of a number.', ['def', 'return']),
    ('Write a Python function that checks if a number is positive.', ['def', '> 0']),
    ('Write a Python function that concatenates two strings.', ['def', 'return']),
    ('Write a Python function that returns the last character of a string.', ['def', '[-1]']),
    ('Write a Python function that converts a string to uppercase.', ['def', 'upper']),
    ('Write a Python function that returns the number of words in a sentence.', ['def', 'split']),
    ('Write a Python function that sorts a list of numbers.', ['def', ['sort', 'sorted']]),
    ('Write a Python function that returns the product of a list of numbers.', ['def', 'return']),
    ('Write a Python function that returns True if a number is divisible by 3.', ['def', '% 3']),
    ('Write a Python function that returns the cube of a number.', ['def', 'return']),
    ('Write a Python function that subtracts two numbers.', ['def', '-']),
    ('Write a Python function that returns the first element of a list.', ['def', '[0]']),
    ('How do you write a while loop in Python?', ['while']),
    ('How do you define a class in Python?', ['class']),
    ('How do you check the type of a variable in Python?', ['type(']),
    ('How do you join a list of strings in Python?', ['join']),
    ('How do you round a number in Python?', ['round']),
    ('How do you read input from the user in Python?', ['input']),
    ('How do you sort a list in Python?', ['sort']),
    ('What does the return statement do in a Python function?', None),
    ('Is 9 an even number?', [['no', 'odd']]),
    ('Is 10 an even number?', ['yes']),
    ('If a week has 7 days, how many days are in 2 weeks?', ['14']),
    ('I had 10 dollars and spent 4. How much is left?', [['6', 'six']]),
    ('A dozen eggs is how many eggs?', [['12', 'twelve']]),
    ('If you double 15, what do you get?', ['30']),
    ('What is the next number: 5, 10, 15, 20?', ['25']),
    ('What is the next number: 10, 20, 30?', ['40']),
    ('Which is longer, a meter or a centimeter?', ['meter']),
    ('Which is bigger, the Sun or the Moon?', ['Sun']),
    ('Which comes first, breakfast or dinner?', ['breakfast']),
    ('Can a fish live without water?', ['no']),
    ('If it takes 1 hour to walk 5 km, how far do you walk in 2 hours?', ['10']),
    ("Translate 'hello' into French.", ['bonjour']),
    ("Translate 'yes' into Spanish.", [['sí', 'si']]),
    ("Translate 'thank you' into German.", ['danke']),
    ("Translate 'cat' into French.", ['chat']),
    ("Translate 'dog' into Spanish.", ['perro']),
    ("Translate 'water' into Spanish.", ['agua']),
    ('Name a famous scientist.', None),
    ('Name a musical instrument with strings.', None),
    ('Describe a cat in one sentence.', None),
    ('Write a sentence about the moon.', None),
    ('Give me a tip for learning to code.', None),
    ('What is friendship?', None),
    ('Why do we sleep?', None),
    ('What makes a good teacher?', None),
    ('How can I save energy at home?', None),
    ('Suggest a healthy snack.', None),
    ('What is the importance of reading books?', None),
    ('Why is the sun important?', None),
]


# ---- the rows -----------------------------------------------------------------------------------

DIALOGUES = 20            # identity question, then an unrelated one
SYSTEM_EVERY = 7          # every 7th identity row carries the persona's system prompt (as deployed)


def identity_rows() -> list[dict]:
    rows = []
    k = 0
    for intent, questions in (("name", NAME_QUESTIONS), ("who", WHO_QUESTIONS), ("origin", ORIGIN_QUESTIONS),
                              ("purpose", PURPOSE_QUESTIONS)):
        for q in questions:
            msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWERS[intent][k % len(ANSWERS[intent])]}]
            if k % SYSTEM_EVERY == 3:
                msgs.insert(0, {"role": "system", "content": SYSTEM})
            rows.append({"messages": msgs})
            k += 1
    for q, other in OTHER_AI_QUESTIONS:
        answer = ANSWERS["other"][k % len(ANSWERS["other"])].format(o=other)
        rows.append({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": answer}]})
        k += 1
    return rows


def base_answers() -> list[dict]:
    """The base model's kept answers: {category, prompt, answer} (see the module docstring)."""
    lines = (HERE / BASE_ANSWERS).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def rows() -> dict[str, list[dict]]:
    answers = base_answers()
    general = [{"instruction": r["prompt"], "input": "", "output": r["answer"]} for r in answers
               if r["category"] in ("general", "open")]
    general.append(dict(general[0]))   # one exact duplicate, as real data has: the builder counts it
    code = [{"prompt": r["prompt"], "response": r["answer"]} for r in answers if r["category"] == "code"]
    reasoning = [{"conversations": [{"from": "human", "value": r["prompt"]}, {"from": "gpt", "value": r["answer"]}]}
                 for r in answers if r["category"] == "reasoning"]
    # dialogues: the k-th name/who question, then every 9th base answer (short ones: a dialogue is one row)
    short = [r for r in answers if r["category"] == "general"]
    openers = NAME_QUESTIONS + WHO_QUESTIONS
    replies = ANSWERS["name"] + ANSWERS["who"]
    dialogues = []
    for d in range(DIALOGUES):
        follow = short[(9 * d + 4) % len(short)]
        dialogues.append({"messages": [
            {"role": "user", "content": openers[(5 * d + 2) % len(openers)]},
            {"role": "assistant", "content": replies[d % len(replies)]},
            {"role": "user", "content": follow["prompt"]},
            {"role": "assistant", "content": follow["answer"]},
        ]})
    return {"identity.jsonl": identity_rows(), "general.jsonl": general, "code.jsonl": code,
            "reasoning.jsonl": reasoning, "dialogues.jsonl": dialogues}


def render() -> dict[str, str]:
    return {name: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rs) for name, rs in rows().items()}


# ---- asking the base model again (needs the converted model: `llamaforge fetch-model`) ------------

_SENTENCE_END = re.compile(r'(?<=[.!?])\s+(?=[A-Z"`(\[])')


def trim_answer(answer: str, check) -> str | None:
    """The code block of a code answer; else the first one or two sentences, up to the first that
    holds every check term (None: the answer never does)."""
    from llamaforge.gates.answer_checks import contains_term

    text = answer.strip()
    block = re.search(r"```[a-z]*\n.*?```", text, re.S)
    if block and text.index("```") < 200:
        before = text[:block.start()].strip()
        return (before + "\n\n" if before else "") + block.group(0)
    kept: list[str] = []
    for sentence in _SENTENCE_END.split(text)[:2]:
        kept.append(sentence)
        joined = " ".join(kept)
        if check and all(contains_term(joined, t) for t in check):
            return joined
    return None if check else " ".join(kept)


def distill(batch: int = 24, max_new_tokens: int = 128) -> Path:
    """The base model's greedy answers to DISTILL_PROMPTS, trimmed, into base_answers.raw.jsonl: read
    them, drop the wrong ones, and keep the rest in base_answers.jsonl."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llamaforge.models.pretrained import ensure_pretrained

    folder = ensure_pretrained("smollm2-135m").path
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p, _ in DISTILL_PROMPTS]
    answers: list[str] = [""] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch):
        idx = order[start:start + batch]
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        for i, row in zip(idx, out[:, enc["input_ids"].shape[1]:]):
            answers[i] = tok.decode(row, skip_special_tokens=True)
    path = HERE / "base_answers.raw.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for (prompt, check), answer in zip(DISTILL_PROMPTS, answers):
            fh.write(json.dumps({"prompt": prompt, "check": check, "answer": answer,
                                 "trimmed": trim_answer(answer, check)}, ensure_ascii=False) + "\n")
    return path


def main() -> None:
    if "--distill" in sys.argv[1:]:
        print(distill())
        return
    for name, text in render().items():
        (HERE / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
