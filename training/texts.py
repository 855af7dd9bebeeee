"""French texts for synthesized training and benchmark material: keywords, near misses, caller speech.

Labelling policy (a product decision that an emergency centre may revisit):

* keyword: the exact keyword of ``spotter.config.KEYWORDS`` and its other grammatical number
  ("malaise"/"malaises", "violences"/"violence", "vol"/"vols"). In French the two are pronounced
  alike, and the product spots these 12 words.
* other (near-miss negatives): every other inflection or derivation ("brûlé", "brûler", "violent",
  "agressé", "cambrioleur", "cambriolé", "intoxiqué", "effondré", "électrocuté", "incendié", "volé",
  "malade"), close-sounding words ("volet", "bol", "gare", "case", "mal à l'aise") and ordinary
  caller speech (addresses, numbers, "venez vite").
* neither: exact homophones of a keyword in different spelling ("gaze" = "gaz", "vole" = "vol").
  The spotter cannot hear the spelling, so they must never be labelled ``other``; they are listed
  in ``HOMOPHONES`` and kept out of every list here.

``KEYWORD_TEXTS`` are the spoken forms the TTS engines read for a keyword clip (alone, exclaimed,
with a determiner); ``carrier_sentence`` embeds a keyword in a caller sentence for benchmarks.
"""
from __future__ import annotations

import re

# French material: the default keyword set (spotter/keywordsets/fr_emergency.toml), whatever set is active

# --- keywords ---------------------------------------------------------------------------------------
# Orthographic forms that count as the keyword (labelling transcripts, checking word lists).
KEYWORD_FORMS: dict[str, tuple[str, ...]] = {
    "malaise": ("malaise", "malaises"),
    "hémorragie": ("hémorragie", "hémorragies"),
    "brûlure": ("brûlure", "brûlures"),
    "intoxication": ("intoxication", "intoxications"),
    "violences": ("violences", "violence"),
    "agression": ("agression", "agressions"),
    "vol": ("vol", "vols"),
    "cambriolage": ("cambriolage", "cambriolages"),
    "incendie": ("incendie", "incendies"),
    "gaz": ("gaz",),
    "effondrement": ("effondrement", "effondrements"),
    "électrocution": ("électrocution", "électrocutions"),
}

# The keyword with a natural determiner, as a caller says it ("il y a {np}").
KEYWORD_NP: dict[str, str] = {
    "malaise": "un malaise",
    "hémorragie": "une hémorragie",
    "brûlure": "une brûlure",
    "intoxication": "une intoxication",
    "violences": "des violences",
    "agression": "une agression",
    "vol": "un vol",
    "cambriolage": "un cambriolage",
    "incendie": "un incendie",
    "gaz": "du gaz",
    "effondrement": "un effondrement",
    "électrocution": "une électrocution",
}

# Spoken texts for keyword clips: the bare word first (espeak-ng says each as intended, checked
# with `espeak-ng -v fr -q --ipa`: "gaz" -> ɡˈaz, "vol" -> vˈɔl), then an exclamation (other
# intonation), then the determiner phrase.
KEYWORD_TEXTS: dict[str, tuple[str, ...]] = {
    kw: (kw, f"{kw.capitalize()} !", KEYWORD_NP[kw]) for kw in KEYWORD_NP
}

# Same sound as a keyword, other spelling: labelled neither keyword nor other (see module doc).
HOMOPHONES: dict[str, tuple[str, ...]] = {
    "gaz": ("gaze", "gazes"),
    "vol": ("vole", "voles", "volent"),
}

# --- other: near misses -----------------------------------------------------------------------------
NEAR_MISSES: tuple[str, ...] = (
    # malaise
    "mal à l'aise", "malaisé", "Marseille", "mayonnaise", "balai", "malade", "mal au ventre", "la chaise",
    # hémorragie
    "hémorroïdes", "énergie", "allergie", "chirurgie", "hémoglobine", "la bougie", "magie",
    # brûlure
    "brûlé", "brûler", "brûlant", "bordure", "brune", "brouillard", "voiture", "allure",
    # intoxication
    "intoxiqué", "toxique", "explication", "indication", "vaccination", "communication",
    # violences
    "violent", "violemment", "violette", "vigilance", "silence", "vacances", "violon",
    # agression
    "agressé", "agressif", "agresseur", "progression", "impression", "pression", "régression",
    # vol
    "volé", "voler", "voleur", "volet", "volant", "volume", "bol", "col", "sol", "folle", "vous",
    # cambriolage
    "cambrioleur", "cambriolé", "cambrioler", "bricolage", "camion", "garage", "carrelage",
    # incendie
    "incendié", "incident", "indice", "Saint-Denis", "un samedi", "lundi", "en Inde", "incidence",
    # gaz
    "gare", "gars", "case", "cas", "casse", "gazon", "gazette", "jazz", "base", "vase", "gâteau",
    # effondrement
    "effondré", "s'effondrer", "effrayant", "évidemment", "enfoncement", "fondamental", "effrontément",
    # électrocution
    "électrocuté", "électricité", "électricien", "électrique", "exécution", "élection", "locution",
)

# --- other: ordinary caller speech ------------------------------------------------------------------
CALLER_WORDS: tuple[str, ...] = (
    "allô", "oui", "non", "bonjour", "bonsoir", "merci", "d'accord", "attendez", "pardon", "voilà",
    "s'il vous plaît", "venez vite", "dépêchez-vous", "au secours", "aidez-moi", "je ne sais pas",
    "ma mère", "mon père", "mon mari", "ma femme", "mon fils", "ma fille", "le voisin", "un enfant",
    "il respire", "il ne répond pas", "elle est tombée", "il saigne", "j'ai peur", "c'est grave",
    "la cuisine", "la chambre", "l'escalier", "le parking", "la porte", "la fenêtre", "le balcon",
    "au troisième étage", "au rez-de-chaussée", "au fond de la cour", "bâtiment B", "code d'entrée",
    "rue Victor Hugo", "avenue de la République", "boulevard Voltaire", "place de la Mairie",
    "impasse des Lilas", "chemin des Vignes", "route de Lyon", "Paris", "Lyon", "Toulouse", "Nantes",
    "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "douze", "quinze",
    "vingt-deux", "trente-sept", "quarante-huit", "soixante-dix", "quatre-vingt-dix", "cent",
    "zéro six", "zéro sept", "le numéro", "mon téléphone", "ambulance", "médecin", "docteur",
    "pompiers", "police", "gendarmerie", "hôpital", "pharmacie", "voiture", "moto", "vélo",
    "fumée", "odeur", "bruit", "cris", "sang", "douleur", "fièvre", "tête", "poitrine", "bras", "jambe",
)

# Caller sentences without any keyword (at least 40): realistic "other" context and false-alarm tests.
CALLER_SENTENCES: tuple[str, ...] = (
    "Allô, oui, bonjour, j'appelle pour ma voisine.",
    "Venez vite, s'il vous plaît, c'est au troisième étage.",
    "J'habite au 12 rue Victor Hugo, à Lyon.",
    "Le code de la porte, c'est 4 5 B 2.",
    "Mon père est tombé dans l'escalier et il ne se relève pas.",
    "Elle ne répond plus, elle a les yeux fermés.",
    "Il y a beaucoup de fumée dans la cage d'escalier.",
    "On entend des cris chez les voisins depuis une heure.",
    "Je suis devant la pharmacie, place de la Mairie.",
    "Mon fils a avalé des médicaments, je ne sais pas combien.",
    "Il saigne beaucoup de la tête, qu'est-ce que je fais ?",
    "La voiture a percuté un poteau au carrefour.",
    "Quelqu'un a forcé la porte de mon appartement.",
    "Il respire mais il ne parle pas.",
    "C'est au fond de la cour, bâtiment B, deuxième porte à gauche.",
    "Mon numéro, c'est le zéro six, douze, trente-quatre, cinquante-six, soixante-dix-huit.",
    "Ma femme a très mal à la poitrine depuis ce matin.",
    "Je ne sais pas, il était par terre quand je suis rentré.",
    "Il y a un homme avec un couteau dans la rue.",
    "Ça sent très fort dans la cuisine, on a ouvert les fenêtres.",
    "Le plafond de la salle de bain s'est écroulé.",
    "Ma grand-mère a quatre-vingt-sept ans, elle est diabétique.",
    "Les secours mettent combien de temps ?",
    "Oui, je reste en ligne, je ne raccroche pas.",
    "Il a pris un coup sur la tête, il est confus.",
    "On est sur l'autoroute A7, direction Marseille, à la sortie quinze.",
    "Mon mari a de la fièvre et il tremble.",
    "La porte est fermée à clé, je ne peux pas entrer.",
    "Les enfants sont avec moi, on est sortis dans la rue.",
    "Je vois des flammes par la fenêtre du voisin.",
    "Il a été frappé par deux personnes devant le bar.",
    "On m'a arraché mon sac dans le métro.",
    "Le bébé ne se réveille pas, il est tout pâle.",
    "J'ai trouvé un homme allongé sur le trottoir.",
    "C'est une maison blanche avec un portail vert.",
    "Non, je ne crois pas, il est juste très fatigué.",
    "Elle s'est coupée avec un couteau de cuisine.",
    "Je suis au premier étage, la porte de droite.",
    "Il y a de l'eau partout, la canalisation a cédé.",
    "Mon collègue est tombé de l'échafaudage.",
    "Attendez, je vous passe ma sœur.",
    "Non, il n'a pas de traitement particulier.",
    "Je crois qu'il a bu, il est très agité.",
    "Pouvez-vous envoyer quelqu'un rapidement ?",
    "Il y a eu un accident de scooter devant l'école.",
    "Le détecteur sonne mais je ne vois rien.",
    "Merci, je vous attends en bas de l'immeuble.",
    "Elle a du mal à respirer, elle devient bleue.",
)

# Templates for benchmark sentences: {np} takes KEYWORD_NP, {kw} the bare keyword (at least 20).
CARRIER_PHRASES: tuple[str, ...] = (
    "Il y a {np} dans l'immeuble.",
    "Allô, je vous appelle pour {np}, venez vite.",
    "On a {np} au troisième étage.",
    "Venez vite, il y a {np} chez ma voisine.",
    "C'est pour {np}, au 12 rue Victor Hugo.",
    "Je crois que c'est {np}, je ne sais pas quoi faire.",
    "Bonjour, je signale {np} rue de la République.",
    "Il y a eu {np} dans le magasin en face.",
    "Ma mère a eu {np} ce matin.",
    "Je pense qu'il s'agit d'{np}.",
    "C'est {np}, s'il vous plaît, dépêchez-vous.",
    "On entend parler d'{np} dans le quartier depuis une heure.",
    "Oui, {np}, au rez-de-chaussée.",
    "Nous avons {np} sur le parking de la gare.",
    "Allô ? Oui, c'est pour {np}.",
    "{kw}, venez vite !",
    "{kw}, je répète, {kw}, au 8 avenue Foch.",
    "Il a dit {kw}, je crois.",
    "Le mot, c'est {kw}, c'est ce que m'a dit le voisin.",
    "Pompiers ? Oui. {kw}. Au deuxième.",
    "Écoutez, {kw}, on est au fond de la cour.",
    "C'est urgent, {kw}, bâtiment B.",
    "Je vous appelle parce qu'il y a {np} chez mon voisin du dessus.",
    "Vite, {np}, on est devant l'école !",
)

WORD_RE = re.compile(r"[a-zàâäçéèêëîïôöùûüÿœæ]+", re.IGNORECASE)


def words_of(text: str) -> list[str]:
    """Lower-case words of a French text (apostrophes and hyphens split words: "l'incendie" -> l, incendie)."""
    return [w.lower() for w in WORD_RE.findall(text)]


def keyword_in(text: str) -> str | None:
    """The first keyword (or keyword homophone's keyword) spoken in text, None when there is none."""
    forms = {f: kw for kw, fs in KEYWORD_FORMS.items() for f in fs}
    forms.update({h: kw for kw, hs in HOMOPHONES.items() for h in hs})
    for w in words_of(text):
        if w in forms:
            return forms[w]
    return None


def carrier_sentence(template: str, keyword: str) -> str:
    """Fill a CARRIER_PHRASES template with a keyword (bare or with its determiner)."""
    if keyword not in KEYWORD_NP:
        raise ValueError(f"unknown keyword {keyword!r}")
    np_ = KEYWORD_NP[keyword]
    text = template.replace("{np}", np_).replace("{kw}", keyword)
    text = text.replace("d'des ", "de ").replace("d'du ", "du ")   # elision after "de"
    return text[0].upper() + text[1:]


OTHER_WORDS: tuple[str, ...] = tuple(dict.fromkeys(NEAR_MISSES + CALLER_WORDS))   # words and short phrases
OTHER_TEXTS: tuple[str, ...] = OTHER_WORDS + CALLER_SENTENCES   # everything labelled OTHER
